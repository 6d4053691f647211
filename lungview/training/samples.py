"""Training samples cut from scans with known nodules by the inference code's own input
functions, with the model card's input spec: segmentation crops with their nodule masks, and
classifier crops (nodules, hard negatives, malignant or benign)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungview.core import CtVolume
from lungview.inference.classify import classifier_input
from lungview.inference.segmentation import segmentation_input
from lungview.models.checkpoint import ModelCard
from lungview.training.augment import exact_flips
from lungview.training.slabs import SEG_CROP


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


def seg_sample(vol: CtVolume, nodules: list[KnownNodule], center_irc, rng,
               card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    """(2 * context + 1, 64, 64) float32 input cut as inference cuts it (the card's context and
    HU clip) and (1, 64, 64) float32 target around a centre, with a random shift and flips."""
    k = int(np.clip(round(center_irc[0]), 0, vol.shape[0] - 1))
    half = SEG_CROP // 2
    r = int(np.clip(round(center_irc[1]) + rng.integers(-half // 2, half // 2 + 1), half, vol.shape[1] - half))
    c = int(np.clip(round(center_irc[2]) + rng.integers(-half // 2, half // 2 + 1), half, vol.shape[2] - half))
    x = segmentation_input(vol.hu, k, (r - half, r + half, c - half, c + half), card)
    y = nodule_mask(vol, nodules, ((k, k + 1), (r - half, r + half), (c - half, c + half))).astype(np.float32)
    if rng.random() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    if rng.random() < 0.5:
        x, y = x[:, :, ::-1], y[:, :, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def cls_sample(vol: CtVolume, center_irc, rng, card: ModelCard, jitter: int = 2) -> np.ndarray:
    """(1, *crop) float32 crop as inference cuts it (the card's crop size and HU clip) with a
    small random shift and in-plane flips/rotations."""
    shift = rng.integers(-jitter, jitter + 1, size=3) if jitter else 0
    x = exact_flips(classifier_input(vol.hu, np.asarray(center_irc) + shift, card), rng)
    return np.ascontiguousarray(x)[None]
