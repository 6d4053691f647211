"""What the pipeline finds: one Detection per candidate, in both coordinate systems."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Fleischner-style size bands (solid nodules), by the mean of long and short axis.
SIZE_CATEGORIES = ((6.0, "<6 mm"), (8.0, "6-8 mm"), (15.0, "8-15 mm"), (30.0, "15-30 mm"))
NO_MALIGNANCY = "no malignancy model"
DEFAULT_THRESHOLD = 0.5  # the book's: a candidate with p_nodule >= 0.5 is a nodule


def mean_diameter(long_axis_mm: float, short_axis_mm: float) -> float:
    """Mean of long and short axis, to 0.1 mm: the size of Fleischner's and Lung-RADS' categories."""
    return round((long_axis_mm + short_axis_mm) / 2.0 + 1e-9, 1)


def size_category(diameter_mm: float) -> str:
    for upper, name in SIZE_CATEGORIES:
        if diameter_mm < upper:
            return name
    return ">=30 mm (mass)"


@dataclass(frozen=True)
class Detection:
    center_xyz: tuple[float, float, float]
    center_irc: tuple[float, float, float]
    diameter_mm: float  # equivalent-sphere diameter of the measured nodule (LUNA16's diameter_mm)
    volume_mm3: float
    long_axis_mm: float  # axial plane, on the slice of largest extent
    short_axis_mm: float  # perpendicular to the long axis
    p_nodule: float
    p_malignant: float | None  # None without a malignancy model: never a made-up number
    malignancy_source: str  # "model: NAME" or NO_MALIGNANCY
    size_category: str  # from mean_diameter_mm
    notes: tuple[str, ...] = ()  # e.g. centred on an interpolated slice
    size_source: str = "scan"  # "scan": measured; "segmentation": the candidate's blob (unlikely ones)

    @property
    def mean_diameter_mm(self) -> float:
        return mean_diameter(self.long_axis_mm, self.short_axis_mm)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["center_xyz"] = [round(float(v), 3) for v in self.center_xyz]
        d["center_irc"] = [round(float(v), 2) for v in self.center_irc]
        for key in ("diameter_mm", "volume_mm3", "long_axis_mm", "short_axis_mm"):
            d[key] = round(float(d[key]), 2)
        d["mean_diameter_mm"] = self.mean_diameter_mm
        d["p_nodule"] = round(float(self.p_nodule), 4)
        d["p_malignant"] = None if self.p_malignant is None else round(float(self.p_malignant), 4)
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Detection:
        """The inverse of to_dict (a saved detection run read back)."""
        return cls(center_xyz=tuple(float(v) for v in d["center_xyz"]),
                   center_irc=tuple(float(v) for v in d["center_irc"]),
                   diameter_mm=float(d["diameter_mm"]), volume_mm3=float(d["volume_mm3"]),
                   long_axis_mm=float(d["long_axis_mm"]), short_axis_mm=float(d["short_axis_mm"]),
                   p_nodule=float(d["p_nodule"]),
                   p_malignant=None if d.get("p_malignant") is None else float(d["p_malignant"]),
                   malignancy_source=str(d.get("malignancy_source", "")),
                   size_category=str(d.get("size_category", "")), notes=tuple(d.get("notes", ())),
                   size_source=str(d.get("size_source", "scan")))
