"""Nodule size measured from the scan: the connected region of nodule density around the
centre, kept within the segmented blob (so that vessels and the chest wall do not count)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungview.core import CtVolume

MAX_RADIUS_MM = 30.0
LUNG_HU = -850.0


def measure(vol: CtVolume, prob: np.ndarray, center_irc, max_radius_mm: float = MAX_RADIUS_MM,
            blob_voxels: int | None = None):
    """(diameter_mm, volume_mm3): equivalent-sphere diameter of the measured region, within
    `max_radius_mm` of the centre, or, given the candidate's blob size, within three times its
    radius (small candidates are measured in a small box: most candidates are small)."""
    spacing = np.asarray(vol.spacing_irc, dtype=np.float64)
    if blob_voxels:
        blob_radius = float(np.cbrt(3.0 * blob_voxels * np.prod(spacing) / (4.0 * np.pi)))
        max_radius_mm = float(np.clip(3.0 * blob_radius + 2.0 * spacing.max(), 8.0, max_radius_mm))
    reach = np.ceil(max_radius_mm / spacing).astype(int)
    c = np.rint(np.asarray(center_irc, dtype=np.float64)).astype(int)
    c = np.clip(c, 0, np.array(vol.shape) - 1)
    lo = np.maximum(c - reach, 0)
    hi = np.minimum(c + reach + 1, vol.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    hu = vol.hu[box].astype(np.float32)
    seg = prob[box] > 63  # 0.25: the blob's soft edge still belongs to it
    local = c - lo
    core = hu[tuple(slice(max(0, x - 1), x + 2) for x in local)]
    center_hu = float(np.median(core))
    # Half-way between the nodule and aerated lung: solid and ground-glass alike.
    level = float(np.clip((center_hu + LUNG_HU) / 2.0, -700.0, -300.0))
    region = hu > level
    grown = ndimage.binary_dilation(seg, iterations=2) if seg.any() else np.ones_like(seg)
    region &= grown
    labels, _ = ndimage.label(region)
    label = labels[tuple(local)]
    if label == 0:
        # The centre is not dense (a ring-like or very faint candidate): use the blob itself.
        labels, _ = ndimage.label(seg)
        label = labels[tuple(local)]
        if label == 0:
            voxels = 1
        else:
            voxels = int(np.count_nonzero(labels == label))
    else:
        voxels = int(np.count_nonzero(labels == label))
    volume = voxels * float(np.prod(spacing))
    diameter = float(np.cbrt(6.0 * volume / np.pi))
    return diameter, volume
