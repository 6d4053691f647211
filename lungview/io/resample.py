"""Geometry fixes that need resampling: sheared (gantry-tilted) stacks, non-uniform spacing."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def deshear_slices(hu: np.ndarray, shift_rows: np.ndarray, shift_cols: np.ndarray) -> None:
    """Shift each slice in-plane (in place) by (shift_rows[k], shift_cols[k]) pixels, so that
    a stack whose corners drift sideways (gantry tilt) lands on an orthogonal grid."""
    for k in range(hu.shape[0]):
        if abs(shift_rows[k]) < 1e-3 and abs(shift_cols[k]) < 1e-3:
            continue
        moved = ndimage.shift(hu[k].astype(np.float32), (shift_rows[k], shift_cols[k]), order=1,
                              mode="constant", cval=-1000.0)
        hu[k] = np.rint(moved).astype(np.int16)


def resample_slices(hu: np.ndarray, positions_mm: np.ndarray, step_mm: float) -> np.ndarray:
    """Linear interpolation along the slice axis from sorted `positions_mm` (starting at 0)
    onto a uniform grid of `step_mm`. Returns a new int16 array."""
    n_out = int(round(positions_mm[-1] / step_mm)) + 1
    grid = np.arange(n_out) * step_mm
    out = np.empty((n_out,) + hu.shape[1:], dtype=np.int16)
    upper = np.clip(np.searchsorted(positions_mm, grid, side="right"), 1, len(positions_mm) - 1)
    lower = upper - 1
    for k in range(n_out):
        a, b = lower[k], upper[k]
        t = (grid[k] - positions_mm[a]) / (positions_mm[b] - positions_mm[a])
        t = min(max(t, 0.0), 1.0)
        if t < 1e-6:
            out[k] = hu[a]
        elif t > 1 - 1e-6:
            out[k] = hu[b]
        else:
            out[k] = np.rint(hu[a] * (1.0 - t) + hu[b] * t).astype(np.int16)
    return out
