"""A fast lung mask, computed at about 2.5 mm in-plane: air inside the body, the largest
components, holes filled and the outline closed so that vessels and juxtapleural nodules
(which notch the lung boundary) lie inside it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungview.core import CtVolume

AIR_BELOW_HU = -400
TARGET_MM = 2.5
CLOSING_MM = 15.0  # closes notches up to about 30 mm wide: juxtapleural nodules
MIN_LUNG_ML = 25.0


@dataclass
class LungMask:
    """The mask at reduced in-plane resolution: `small[i, r // step, c // step]`."""

    small: np.ndarray  # bool (index, row // step, col // step)
    step: int
    shape: tuple[int, int, int]  # full-resolution shape

    def contains_irc(self, irc) -> np.ndarray:
        pts = np.atleast_2d(np.rint(np.asarray(irc, dtype=np.float64))).astype(np.int64)
        i = np.clip(pts[:, 0], 0, self.shape[0] - 1)
        r = np.clip(pts[:, 1] // self.step, 0, self.small.shape[1] - 1)
        c = np.clip(pts[:, 2] // self.step, 0, self.small.shape[2] - 1)
        return self.small[i, r, c]

    def bbox(self, margin_px: int = 0, multiple: int = 1):
        """(slice_lo, slice_hi, row_lo, row_hi, col_lo, col_hi) at full resolution, the in-plane
        bounds aligned to `multiple` and padded by `margin_px`; None when there is no lung."""
        if not self.small.any():
            return None
        zs = np.flatnonzero(self.small.any(axis=(1, 2)))
        rs = np.flatnonzero(self.small.any(axis=(0, 2)))
        cs = np.flatnonzero(self.small.any(axis=(0, 1)))
        r0, r1 = rs[0] * self.step - margin_px, (rs[-1] + 1) * self.step + margin_px
        c0, c1 = cs[0] * self.step - margin_px, (cs[-1] + 1) * self.step + margin_px
        r0, c0 = max(0, r0 // multiple * multiple), max(0, c0 // multiple * multiple)
        r1, c1 = min(self.shape[1], r1), min(self.shape[2], c1)
        return int(zs[0]), int(zs[-1]) + 1, int(r0), int(r1), int(c0), int(c1)

    def slice_bbox(self, k: int):
        """In-plane bounds (row_lo, row_hi, col_lo, col_hi) of slice k, or None."""
        plane = self.small[k]
        if not plane.any():
            return None
        rs, cs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        return (rs[0] * self.step, (rs[-1] + 1) * self.step,
                cs[0] * self.step, (cs[-1] + 1) * self.step)

    def full_box(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        """The mask at full resolution over a box (index, row, col slices with explicit bounds)."""
        zs, rs, cs = box
        rows = np.clip(np.arange(rs.start, rs.stop) // self.step, 0, self.small.shape[1] - 1)
        cols = np.clip(np.arange(cs.start, cs.stop) // self.step, 0, self.small.shape[2] - 1)
        return self.small[zs][:, rows][:, :, cols]

    def full(self) -> np.ndarray:
        """The mask at full resolution (bool)."""
        up = np.repeat(np.repeat(self.small, self.step, axis=1), self.step, axis=2)
        return up[:, : self.shape[1], : self.shape[2]]

    @property
    def volume_fraction(self) -> float:
        return float(self.small.mean())


def lung_mask(vol: CtVolume) -> LungMask:
    sx, sy, sz = vol.spacing_xyz
    step = max(1, int(round(TARGET_MM / min(sx, sy))))
    small_hu = vol.hu[:, ::step, ::step]
    air = small_hu < AIR_BELOW_HU
    # Air connected to the in-plane border is outside the body (and the table, and padding).
    labels, n = ndimage.label(air)
    if n == 0:
        return LungMask(np.zeros_like(air), step, vol.shape)
    border = np.unique(np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    sizes[border] = 0
    voxel_ml = sx * sy * step * step * sz / 1000.0
    keep = np.flatnonzero(sizes * voxel_ml >= MIN_LUNG_ML)
    if keep.size == 0:
        return LungMask(np.zeros_like(air), step, vol.shape)
    # The lungs: the largest components and any other at least a tenth of the largest.
    keep = keep[sizes[keep] >= 0.1 * sizes[keep].max()]
    mask = np.isin(labels, keep)
    closed = _close_3d(mask, (sz, sy * step, sx * step)) | mask
    filled = np.empty_like(closed)
    for k in range(closed.shape[0]):
        filled[k] = ndimage.binary_fill_holes(closed[k])
    return LungMask(filled, step, vol.shape)


def _close_3d(mask: np.ndarray, sampling) -> np.ndarray:
    """Closing with a ball of CLOSING_MM (juxtapleural nodules notch the lung from the chest
    wall or from the diaphragm), by distance transforms on a grid of about 5 mm (max-pooled, so
    generous by at most one coarse voxel), then brought back to the mask's grid."""
    factors = [max(1, int(round(5.0 / s))) for s in sampling]
    shape = [-(-n // f) * f for n, f in zip(mask.shape, factors)]
    grown = np.zeros(shape, dtype=bool)
    grown[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    coarse = grown.reshape(shape[0] // factors[0], factors[0], shape[1] // factors[1], factors[1],
                           shape[2] // factors[2], factors[2]).any(axis=(1, 3, 5))
    coarse_sampling = tuple(s * f for s, f in zip(sampling, factors))
    pad = int(np.ceil(CLOSING_MM / min(coarse_sampling))) + 1
    padded = np.pad(coarse, pad)
    dilated = ndimage.distance_transform_edt(~padded, sampling=coarse_sampling) <= CLOSING_MM
    closed = ndimage.distance_transform_edt(dilated, sampling=coarse_sampling) > CLOSING_MM
    closed = closed[pad:-pad, pad:-pad, pad:-pad]
    for axis, f in enumerate(factors):
        closed = np.repeat(closed, f, axis=axis)
    return closed[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
