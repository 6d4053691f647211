"""Sizes of a mask as radiologists read them (numpy only: used by the measurement, the masks the
reader paints and the LIDC readers' contours alike)."""

from __future__ import annotations

import numpy as np


def axial_axes(mask: np.ndarray, spacing_irc) -> tuple[float, float]:
    """(long, short) axis in mm on the axial slice where the long axis is largest: the largest
    Feret diameter and the largest extent perpendicular to it, each plus one pixel (the extent
    of a row of pixels is its centres' distance plus a pixel)."""
    sy, sx = float(spacing_irc[1]), float(spacing_irc[2])
    pixel = 0.5 * (sx + sy)
    best = (0.0, 0.0)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        plane = np.pad(mask[k], 1)  # beyond the array is outside
        inner = plane.copy()  # the outline: pixels with a 4-neighbour outside (the extremes lie there)
        inner[1:, :] &= plane[:-1, :]
        inner[:-1, :] &= plane[1:, :]
        inner[:, 1:] &= plane[:, :-1]
        inner[:, :-1] &= plane[:, 1:]
        rows, cols = np.nonzero(plane & ~inner)
        pts = np.column_stack([cols * sx, rows * sy]).astype(np.float64)
        diff = pts[:, None, :] - pts[None, :, :]
        dist = np.sqrt((diff**2).sum(axis=2))
        i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
        long = float(dist[i, j]) + pixel
        if long <= best[0]:
            continue
        u = (pts[j] - pts[i]) / dist[i, j] if dist[i, j] > 0 else np.array([1.0, 0.0])
        across = pts @ np.array([-u[1], u[0]])
        best = (long, float(across.max() - across.min()) + pixel)
    return best


def equivalent_diameter(volume_mm3: float) -> float:
    """The diameter of the sphere of that volume."""
    return float(np.cbrt(6.0 * volume_mm3 / np.pi))


def sphere_volume(diameter_mm: float) -> float:
    """The volume of the sphere of that diameter (the inverse of equivalent_diameter)."""
    return float(np.pi * diameter_mm**3 / 6.0)
