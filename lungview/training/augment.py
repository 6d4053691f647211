"""The book's augmentations, drawn as it draws them: getCtAugmentedCandidate (p2ch12) for the
classifiers' 3D crops and SegmentationAugmentation (p2ch13) for the U-Net's 2D crops."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

BOOK_AUGMENTATION = {"flip": True, "offset": 0.1, "scale": 0.2, "rotate": True, "noise": 25.0}  # p2ch12
# p2ch13's SegmentationAugmentation (the book's segmentation training): flip, offset 0.03, scale 0.2,
# rotation, noise 25 HU, on 64 x 64 crops
BOOK_SEG_AUGMENTATION = {"flip": True, "offset": 0.03, "scale": 0.2, "rotate": True, "noise": 25.0}


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
