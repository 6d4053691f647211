"""What the pipeline finds: one Detection per candidate, in both coordinate systems."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Fleischner-style size bands (solid nodules), by longest-axis-equivalent diameter.
SIZE_CATEGORIES = ((6.0, "<6 mm"), (8.0, "6-8 mm"), (15.0, "8-15 mm"), (30.0, "15-30 mm"))


def size_category(diameter_mm: float) -> str:
    for upper, name in SIZE_CATEGORIES:
        if diameter_mm < upper:
            return name
    return ">=30 mm (mass)"


@dataclass(frozen=True)
class Detection:
    center_xyz: tuple[float, float, float]
    center_irc: tuple[float, float, float]
    diameter_mm: float
    volume_mm3: float
    p_nodule: float
    p_malignant: float
    malignancy_source: str  # "model: NAME" or "size estimate"
    size_category: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["center_xyz"] = [round(float(v), 3) for v in self.center_xyz]
        d["center_irc"] = [round(float(v), 2) for v in self.center_irc]
        for key in ("diameter_mm", "volume_mm3"):
            d[key] = round(float(d[key]), 2)
        for key in ("p_nodule", "p_malignant"):
            d[key] = round(float(d[key]), 4)
        return d
