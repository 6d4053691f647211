"""Training samples cut from scans with known nodules: 7-slice segmentation crops with their
nodule masks, and 32x48x48 classifier crops (nodules, hard negatives, malignant or benign)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungview.core import CtVolume
from lungview.inference.classify import CROP_IRC, crop

SEG_CROP = 64
CONTEXT = 3


@dataclass
class KnownNodule:
    center_irc: np.ndarray
    diameter_mm: float
    malignant: bool


def nodule_mask(vol: CtVolume, nodules: list[KnownNodule], box) -> np.ndarray:
    """Inside each nodule's sphere and denser than aerated lung: the book's "label_pos" idea
    (annotation extent intersected with a density threshold)."""
    (i0, i1), (r0, r1), (c0, c1) = box
    ii, rr, cc = np.ogrid[i0:i1, r0:r1, c0:c1]
    sp = vol.spacing_irc
    out = np.zeros((i1 - i0, r1 - r0, c1 - c0), dtype=bool)
    for n in nodules:
        ci, cr, cc_ = n.center_irc
        d2 = ((ii - ci) * sp[0]) ** 2 + ((rr - cr) * sp[1]) ** 2 + ((cc - cc_) * sp[2]) ** 2
        out |= d2 <= (n.diameter_mm / 2 * 1.1) ** 2
    out &= vol.hu[i0:i1, r0:r1, c0:c1] > -750
    return out


def seg_sample(vol: CtVolume, nodules: list[KnownNodule], center_irc, rng) -> tuple[np.ndarray, np.ndarray]:
    """(7, 64, 64) float32 input (HU clipped) and (1, 64, 64) float32 target around a centre,
    with a random shift and flips."""
    k = int(np.clip(round(center_irc[0]), 0, vol.shape[0] - 1))
    half = SEG_CROP // 2
    r = int(np.clip(round(center_irc[1]) + rng.integers(-half // 2, half // 2 + 1), half, vol.shape[1] - half))
    c = int(np.clip(round(center_irc[2]) + rng.integers(-half // 2, half // 2 + 1), half, vol.shape[2] - half))
    idx = np.clip(np.arange(k - CONTEXT, k + CONTEXT + 1), 0, vol.shape[0] - 1)
    x = vol.hu[idx, r - half:r + half, c - half:c + half].astype(np.float32)
    np.clip(x, -1000, 1000, out=x)
    y = nodule_mask(vol, nodules, ((k, k + 1), (r - half, r + half), (c - half, c + half))).astype(np.float32)
    if rng.random() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    if rng.random() < 0.5:
        x, y = x[:, :, ::-1], y[:, :, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def cls_sample(vol: CtVolume, center_irc, rng, jitter: int = 2) -> np.ndarray:
    """(1, 32, 48, 48) float32 crop with a small random shift and in-plane flips/rotations."""
    shift = rng.integers(-jitter, jitter + 1, size=3) if jitter else 0
    x = crop(vol.hu, np.asarray(center_irc) + shift, CROP_IRC).astype(np.float32)
    np.clip(x, -1000, 1000, out=x)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
    x = np.rot90(x, k=int(rng.integers(0, 4)), axes=(1, 2))
    return np.ascontiguousarray(x)[None]
