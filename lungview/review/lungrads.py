"""Lung-RADS v2022 categories from a nodule's type and size (a research aid, not a report).

Sizes are the mean of long and short axis to 0.1 mm (`core.findings.mean_diameter`), as
Lung-RADS measures them. The baseline-screening rules of the ACR's v2022 table:

- solid: < 6 mm -> 2; 6 to < 8 -> 3; 8 to < 15 -> 4A; >= 15 -> 4B
- part-solid (total size, solid component): total < 6 -> 2; total >= 6 with a solid component
  < 6 -> 3; solid component 6 to < 8 -> 4A; >= 8 -> 4B
- ground-glass: < 30 mm -> 2; >= 30 -> 3
- calcified (a benign pattern of calcification): 1

A part-solid nodule of 6 mm or more whose solid component has not been measured gets no
category (None): 3, 4A and 4B all remain possible. A scan's category is the worst of its
confirmed nodules; a scan without one is category 1.
"""

from __future__ import annotations

ORDER = ("1", "2", "3", "4A", "4B")
TYPES = ("solid", "part-solid", "ground-glass", "calcified")


def lung_rads(nodule_type: str, mean_mm: float, solid_mm: float | None = None) -> str | None:
    """The category of one nodule; `mean_mm` and `solid_mm` already rounded to 0.1 mm."""
    if nodule_type == "calcified":
        return "1"
    if nodule_type == "ground-glass":
        return "2" if mean_mm < 30.0 else "3"
    if nodule_type == "part-solid":
        if mean_mm < 6.0:
            return "2"
        if solid_mm is None:
            return None
        return "3" if solid_mm < 6.0 else "4A" if solid_mm < 8.0 else "4B"
    if nodule_type == "solid":
        return "2" if mean_mm < 6.0 else "3" if mean_mm < 8.0 else "4A" if mean_mm < 15.0 else "4B"
    raise ValueError(f"unknown nodule type {nodule_type!r}; choose from {', '.join(TYPES)}")


def worst(categories) -> str:
    """The scan's category: the worst of its nodules' (unknown ones skipped), 1 without any."""
    known = [c for c in categories if c is not None]
    return max(known, key=ORDER.index) if known else "1"
