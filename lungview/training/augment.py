"""Augmentations: the book's, drawn as it draws them (getCtAugmentedCandidate, p2ch12, for the
classifiers' 3D crops; SegmentationAugmentation, p2ch13, for the U-Net's 2D crops), and the demo
recipe's exact one (whole-voxel shifts, flips and quarter turns in the axial plane).

The book's resamples every crop (offset, scale and rotation through trilinear interpolation),
which also halves the scan's own noise (measured on 50 HU phantom noise: 42 -> 23 HU between
neighbouring voxels, 34 HU with its 25 HU of added noise); the exact one moves whole voxels and
leaves noise and edges as the scanner made them. A fine-tune uses the one its parent learned with
(training.finetune.augmentation_of)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

BOOK_AUGMENTATION = {"flip": True, "offset": 0.1, "scale": 0.2, "rotate": True, "noise": 25.0}  # p2ch12
# p2ch13's SegmentationAugmentation (the book's segmentation training): flip, offset 0.03, scale 0.2,
# rotation, noise 25 HU, on 64 x 64 crops
BOOK_SEG_AUGMENTATION = {"flip": True, "offset": 0.03, "scale": 0.2, "rotate": True, "noise": 25.0}
# the demo models' recipe (training.samples.cls_sample): whole voxels only
EXACT_AUGMENTATION = {"shift_voxels": 2, "flip_axial": True, "quarter_turns": True}


def _random_affines(n: int, dims: int, rng: np.random.Generator, aug: dict) -> np.ndarray:
    """(n, dims, dims + 1) matrices for affine_grid, as the book draws them: per axis a flip, an
    offset and a scale, then a rotation in the plane of the first two grid axes (x, y: the axial
    plane)."""
    mats = []
    for _ in range(n):
        t = np.eye(dims + 1)
        for i in range(dims):
            if aug.get("flip") and rng.random() > 0.5:
                t[i, i] *= -1
            if aug.get("offset"):
                t[i, dims] = aug["offset"] * (rng.random() * 2 - 1)
            if aug.get("scale"):
                t[i, i] *= 1.0 + aug["scale"] * (rng.random() * 2 - 1)
        if aug.get("rotate"):
            a = rng.random() * math.pi * 2
            rot = np.eye(dims + 1)
            rot[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
            t = t @ rot
        mats.append(t[:dims])
    return np.stack(mats)


def augment(x: torch.Tensor, rng: np.random.Generator, aug: dict = BOOK_AUGMENTATION) -> torch.Tensor:
    """The book's getCtAugmentedCandidate on a batch (N, 1, D, H, W): per sample a random flip,
    offset and scale per axis and a rotation in the axial plane, applied with affine_grid and
    grid_sample (border padding), then Gaussian noise of `noise` HU."""
    mats = _random_affines(x.shape[0], 3, rng, aug)
    theta = torch.tensor(mats, dtype=torch.float32, device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if aug.get("noise"):
        noise = torch.from_numpy(rng.standard_normal(out.shape).astype(np.float32)).to(x.device)
        out = out + noise * aug["noise"]
    return out


def augment2d(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, aug: dict = BOOK_SEG_AUGMENTATION):
    """The book's SegmentationAugmentation on (N, C, H, W) inputs and (N, 1, H, W) targets: the
    same random flip, offset, scale and rotation for both (the target re-thresholded at 0.5), noise
    on the input only."""
    mats = _random_affines(x.shape[0], 2, rng, aug)
    theta = torch.tensor(mats, dtype=torch.float32, device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    y = (F.grid_sample(y, grid, padding_mode="border", align_corners=False) > 0.5).float()
    if aug.get("noise"):
        x = x + torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32)).to(x.device) * aug["noise"]
    return x, y


def exact_flips(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One (D, H, W) crop flipped along rows, along columns (each with probability 1/2) and
    turned by a random number of quarter turns in the axial plane."""
    if rng.random() < 0.5:
        x = x[:, ::-1]
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
    return np.rot90(x, k=int(rng.integers(0, 4)), axes=(1, 2))


def augment_exact(x: np.ndarray, rng: np.random.Generator, aug: dict = EXACT_AUGMENTATION) -> np.ndarray:
    """The exact augmentation on crops (N, D + 2j, H + 2j, W + 2j) cut with a margin of j =
    `shift_voxels` around the centre: per sample a whole-voxel shift within the margin, then
    `exact_flips`. Returns (N, D, H, W) float32: voxels moved, none interpolated."""
    j = int(aug.get("shift_voxels", 0))
    size = [n - 2 * j for n in x.shape[1:]]
    out = []
    for v in x:
        lo = rng.integers(0, 2 * j + 1, size=3) if j else np.zeros(3, dtype=int)
        v = v[tuple(slice(int(a), int(a) + n) for a, n in zip(lo, size))]
        if aug.get("flip_axial") or aug.get("quarter_turns"):
            v = exact_flips(v, rng)
        out.append(np.ascontiguousarray(v))
    return np.stack(out).astype(np.float32, copy=False)
