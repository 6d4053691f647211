"""CtVolume: a scan in memory, HU as int16 in (index, row, col) order, with its geometry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lungview.core import geometry


@dataclass(frozen=True)
class SeriesSummary:
    """One series found beside the one that was opened, so the caller can choose it."""

    series_uid: str
    modality: str
    files: int
    description: str = ""
    shape: tuple[int, int, int] | None = None
    slice_thickness_mm: float | None = None
    series_number: str = ""


@dataclass
class CtVolume:
    """A CT scan. `hu` is int16 (index, row, col); spacing and origin are (x, y, z) in mm."""

    hu: np.ndarray
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    source: str = ""
    modality: str = "CT"
    series_uid: str = ""
    study_uid: str = ""
    series_description: str = ""
    slice_thickness_mm: float | None = None
    files: int = 1
    other_series: list[SeriesSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Slices made by interpolation (missing or resampled), not measured: shown and reported as such.
    interpolated_slices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"CtVolume needs a 3D array, got {self.hu.ndim}D")
        if self.hu.dtype != np.int16:
            raise ValueError(f"CtVolume holds int16 HU, got {self.hu.dtype}")
        self.spacing_xyz = tuple(float(s) for s in self.spacing_xyz)  # type: ignore[assignment]
        self.origin_xyz = tuple(float(o) for o in self.origin_xyz)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if min(self.spacing_xyz) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing_xyz}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.hu.shape)  # type: ignore[return-value]

    @property
    def spacing_irc(self) -> tuple[float, float, float]:
        return self.spacing_xyz[::-1]  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_xyz))

    def irc_to_xyz(self, irc) -> np.ndarray:
        return geometry.irc_to_xyz(irc, self.origin_xyz, self.spacing_xyz, self.direction)

    def xyz_to_irc(self, xyz) -> np.ndarray:
        return geometry.xyz_to_irc(xyz, self.origin_xyz, self.spacing_xyz, self.direction)

    def xyz_to_irc_rounded(self, xyz) -> np.ndarray:
        return geometry.xyz_to_irc_rounded(xyz, self.origin_xyz, self.spacing_xyz, self.direction)

    def contains_irc(self, irc) -> np.ndarray | bool:
        """Whether (rounded) voxel coordinates lie inside the array."""
        pts = np.atleast_2d(np.rint(np.asarray(irc, dtype=np.float64)))
        inside = np.all((pts >= 0) & (pts < np.asarray(self.shape)), axis=1)
        return bool(inside[0]) if np.ndim(irc) == 1 else inside

    def orientation(self) -> str:
        return geometry.orientation_letters(self.direction)

    def summary(self) -> SeriesSummary:
        """This scan described as one of a folder's series."""
        return SeriesSummary(series_uid=self.series_uid, modality=self.modality, files=self.files,
                             description=self.series_description, shape=self.shape,
                             slice_thickness_mm=self.slice_thickness_mm)

    def hu_range(self) -> tuple[int, int]:
        return int(self.hu.min()), int(self.hu.max())

    def not_ct_reason(self) -> str | None:
        """Why the values do not look like a chest CT in Hounsfield units (a label map, a
        rescaled image, MR), or None when they do. Looked at on a sample of the voxels."""
        step = max(1, int(round((self.hu.size / 2e6) ** (1 / 3))))
        sample = self.hu[::step, ::step, ::step]
        lo, hi = int(sample.min()), int(sample.max())
        distinct = np.unique(sample.ravel()[:: max(1, sample.size // 200_000)])
        if len(distinct) <= 16:
            values = ", ".join(str(int(v)) for v in distinct[:6]) + (" ..." if len(distinct) > 6 else "")
            return f"it holds only {len(distinct)} distinct values ({values}): a label map or mask, not a CT"
        if lo > -500:
            return f"its lowest value is {lo}: no air, so the values are not Hounsfield units"
        if hi - lo < 500:
            return f"its values span only {lo} .. {hi}: not the range of a CT in Hounsfield units"
        return None
