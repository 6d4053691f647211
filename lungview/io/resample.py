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


def fill_missing(hu: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Measured slice j goes to position index[j] (sorted, increasing) of a new stack; the
    positions in between are interpolated linearly from their two measured neighbours.
    Returns the new int16 array and the interpolated positions."""
    out = np.empty((int(index[-1]) + 1,) + hu.shape[1:], dtype=np.int16)
    out[index] = hu
    filled = []
    for j in np.flatnonzero(np.diff(index) > 1):
        a, b = int(index[j]), int(index[j + 1])
        for m in range(a + 1, b):
            t = (m - a) / (b - a)
            out[m] = np.rint(hu[j] * (1.0 - t) + hu[j + 1] * t).astype(np.int16)
            filled.append(m)
    return out, filled


def resample_slices(hu: np.ndarray, positions_mm: np.ndarray, step_mm: float,
                    tolerance_mm: float) -> tuple[np.ndarray, list[int]]:
    """Slices on a uniform grid of `step_mm` from sorted `positions_mm` (starting at 0): a slice
    within `tolerance_mm` of a grid position is copied as it is; others are interpolated
    linearly between their neighbours. Returns the new int16 array and the indices of the
    interpolated slices (they hold no measured data)."""
    n_out = int(round(positions_mm[-1] / step_mm)) + 1
    grid = np.arange(n_out) * step_mm
    out = np.empty((n_out,) + hu.shape[1:], dtype=np.int16)
    nearest = np.abs(positions_mm[None, :] - grid[:, None]).argmin(axis=1)
    upper = np.clip(np.searchsorted(positions_mm, grid, side="right"), 1, len(positions_mm) - 1)
    interpolated = []
    for k in range(n_out):
        j = nearest[k]
        if abs(positions_mm[j] - grid[k]) <= tolerance_mm:
            out[k] = hu[j]
            continue
        a, b = upper[k] - 1, upper[k]
        t = min(max((grid[k] - positions_mm[a]) / (positions_mm[b] - positions_mm[a]), 0.0), 1.0)
        out[k] = np.rint(hu[a] * (1.0 - t) + hu[b] * t).astype(np.int16)
        interpolated.append(k)
    return out, interpolated
