"""Training loops shared by the demo-model recipe and (later) fine-tuning: seeded, with
progress and cancellation, bf16 autocast where the device supports it."""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from lungview.core.jobs import CancelToken, ProgressCallback, no_progress
from lungview.inference.device import DeviceInfo, autocast, autocast_gpu


def dice_bce_loss(pred: torch.Tensor, target: torch.Tensor, total=None) -> torch.Tensor:
    """Soft Dice over the batch plus BCE with recall weighting, like the book's segmentation
    training (which weighs false negatives 8x): missing a nodule costs more than a false pixel.
    `total(sums)` gives the Dice's sums over the whole batch when this process holds a share of it
    (training.distributed.batch_sum)."""
    pred = pred.float().clamp(1e-6, 1 - 1e-6)
    sums = torch.stack([(pred * target).sum(), pred.sum(), target.sum()])
    inter, p_sum, t_sum = total(sums) if total is not None else sums
    dice = 1 - (2 * inter + 1) / (p_sum + t_sum + 1)
    weight = 1.0 + 7.0 * target
    bce = F.binary_cross_entropy(pred, target, weight=weight)
    return dice + bce


def _fit(model, batches, steps: int, lr: float, compute_loss, label: str, progress: ProgressCallback,
         cancel: CancelToken | None) -> list[float]:
    """Adam with a cosine schedule; `batches()` gives the tensors `compute_loss` takes."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for step in range(steps):
        loss = compute_loss(*batches())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        progress(step + 1, steps, f"{label} loss {np.mean(losses[-50:]):.3f}")
        if cancel is not None:
            cancel.check()
    return losses


def train_segmentation(model, sampler, steps: int, device: DeviceInfo, batch: int = 16,
                       lr: float = 1e-3, progress: ProgressCallback = no_progress,
                       cancel: CancelToken | None = None) -> list[float]:
    """`sampler(batch)` returns (x, y) numpy arrays (N, 7, H, W), (N, 1, H, W)."""
    model.to(device.device).train()

    def batches():
        x, y = sampler(batch)
        return torch.from_numpy(x).to(device.device), torch.from_numpy(y).to(device.device)

    def loss(x, y):
        with autocast(device):
            pred = model(x)
        return dice_bce_loss(pred, y)

    losses = _fit(model, batches, steps, lr, loss, "segmentation", progress, cancel)
    model.eval()
    return losses


def train_classifier(model, sampler, steps: int, device: DeviceInfo, batch: int = 32,
                     lr: float = 1e-3, progress: ProgressCallback = no_progress,
                     cancel: CancelToken | None = None, label: str = "classifier") -> list[float]:
    """`sampler(batch)` returns (x, labels): (N, 1, 32, 48, 48) float32 and (N,) int64,
    balanced by the sampler (as the book balances positives and negatives)."""
    cpu = device.device.type == "cpu"
    # On CPUs fp32 channels-last-3d trains 2.6x faster than the default layout and beats bf16.
    model.to(device.device, memory_format=torch.channels_last_3d if cpu else torch.preserve_format).train()

    def batches():
        x, labels = sampler(batch)
        x = torch.from_numpy(x).to(device.device)
        if cpu:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x, torch.from_numpy(labels).to(device.device)

    def loss(x, labels):
        with autocast_gpu(device):
            logits, _ = model(x)
        return F.cross_entropy(logits.float(), labels)

    losses = _fit(model, batches, steps, lr, loss, label, progress, cancel)
    model.to(memory_format=torch.contiguous_format).eval()
    return losses
