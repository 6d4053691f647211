"""The grid the models see: a scan whose slice spacing lies outside the range the models were
trained on (their cards' slice_spacing_mm) is resampled along z for them, and what they find is
mapped back to the scan's own voxels."""

from __future__ import annotations

import dataclasses

import numpy as np

from lungview.core import CtVolume

TOLERANCE = 0.02  # relative: 1.27 mm is still "1.25 mm"


def model_slice_spacing(spacing_mm: float, ranges) -> float | None:
    """The slice spacing to resample to, or None when the scan's own suits every model.
    `ranges`: (low, high) per model (None entries are ignored); when they do not overlap, the
    first (the segmentation model's) wins."""
    ranges = [tuple(r) for r in ranges if r is not None]
    if not ranges:
        return None
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if lo > hi:
        lo, hi = ranges[0]
    if lo * (1 - TOLERANCE) <= spacing_mm <= hi * (1 + TOLERANCE):
        return None
    return float(lo if spacing_mm < lo else hi)


def resample_z(vol: CtVolume, spacing_mm: float) -> CtVolume:
    """The scan on slices `spacing_mm` apart (linear interpolation along z, first slice kept in
    place); same in-plane grid, origin and direction."""
    sz = vol.spacing_xyz[2]
    n = int(np.floor((vol.shape[0] - 1) * sz / spacing_mm + 1e-6)) + 1
    pos = np.arange(n) * spacing_mm / sz  # in source slice units
    lo = np.minimum(np.floor(pos).astype(int), vol.shape[0] - 1)
    hi = np.minimum(lo + 1, vol.shape[0] - 1)
    t = (pos - lo).astype(np.float32)
    hu = np.empty((n,) + vol.shape[1:], dtype=np.int16)
    for k in range(n):
        if t[k] < 1e-6:
            hu[k] = vol.hu[lo[k]]
        else:
            mixed = vol.hu[lo[k]].astype(np.float32) * (1 - t[k]) + vol.hu[hi[k]].astype(np.float32) * t[k]
            hu[k] = np.rint(mixed)
    return dataclasses.replace(vol, hu=hu, spacing_xyz=(vol.spacing_xyz[0], vol.spacing_xyz[1], spacing_mm),
                               warnings=list(vol.warnings), interpolated_slices=())


def nearest_slices(native: CtVolume, model: CtVolume) -> np.ndarray:
    """For each slice of `native`, the index of the nearest slice of `model` (same origin)."""
    z = np.arange(native.shape[0]) * native.spacing_xyz[2]
    return np.clip(np.rint(z / model.spacing_xyz[2]).astype(int), 0, model.shape[0] - 1)


def to_native_irc(native: CtVolume, model: CtVolume, irc: np.ndarray) -> np.ndarray:
    """Voxel coordinates on the model grid -> on the scan's own grid (only z differs)."""
    out = np.array(irc, dtype=np.float64).reshape(-1, 3)
    out[:, 0] *= model.spacing_xyz[2] / native.spacing_xyz[2]
    return out
