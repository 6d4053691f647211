"""Classification of candidates with the book's LunaModel: crops of the model card's size (the
book's 32x48x48 voxels, shifted to stay inside the volume at the edges, as the book does), HU
clipped to the card's range ([-1000, 1000])."""

from __future__ import annotations


import numpy as np
import torch

from lungview.core import CtVolume
from lungview.core.jobs import CancelToken, ProgressCallback, no_progress
from lungview.inference.device import DeviceInfo, autocast_gpu, smaller_batch
from lungview.models.checkpoint import ModelCard, book_card

def crop(hu: np.ndarray, center_irc, size) -> np.ndarray:
    """The book's getRawCandidate: a box of `size` around the rounded centre, moved inside the
    volume where it would stick out; padded with air only when the volume is smaller."""
    starts, pads = [], []
    for axis, (c, width) in enumerate(zip(center_irc, size)):
        extent = hu.shape[axis]
        start = int(round(float(c) - width / 2))
        start = max(0, min(start, extent - width))
        starts.append(start)
        pads.append(max(0, width - extent))
    out = hu[tuple(slice(s, s + w) for s, w in zip(starts, size))]
    if any(pads):
        out = np.pad(out, [(0, p) for p in pads], constant_values=-1000)
    return out


def classifier_input(hu: np.ndarray, center_irc, card: ModelCard, margin: int = 0) -> np.ndarray:
    """The float32 crop a classifier sees (inference and training alike): the card's crop size
    (and `margin` voxels more on every side, for training's whole-voxel shifts) and HU clip."""
    x = crop(hu, center_irc, [n + 2 * margin for n in card.crop]).astype(np.float32)
    np.clip(x, *card.hu_clip, out=x)
    return x


def _forward(model: torch.nn.Module, batch: np.ndarray, device: DeviceInfo) -> np.ndarray:
    x = torch.from_numpy(batch)[:, None].to(device.device)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        with autocast_gpu(device):
            _, probs = model(x)
        return probs[:, 1].float().cpu().numpy()


def classify(vol: CtVolume, centers, model, device: DeviceInfo,
             batch_size: int = 64, progress: ProgressCallback = no_progress,
             cancel: CancelToken | None = None, label: str = "classifying",
             card: ModelCard | None = None) -> np.ndarray:
    """Probability of class 1 (nodule, or malignant) for each centre; input as the model card
    says (the book's when no card is given). `model`: the module, or its export run by another
    runtime (inference.backends.ExportedNet)."""
    card = card or book_card("nodule", "book LunaModel")
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    out = np.zeros(len(centers), dtype=np.float64)
    exported = not isinstance(model, torch.nn.Module)  # an export run by another runtime (inference.backends)
    if not exported:  # channels-last-3d: twice as fast for these small 3D convolutions on CPUs (measured)
        model = model.to(device.device, memory_format=torch.channels_last_3d)
    done = 0
    progress(0, len(centers), label)
    while done < len(centers):
        part = centers[done:done + batch_size]
        batch = np.stack([classifier_input(vol.hu, c, card) for c in part])
        try:  # moving the batch to the device can run out of memory too
            p = model(batch[:, None])[:, 1] if exported else _forward(model, batch, device)
        except RuntimeError as exc:
            retry = smaller_batch(exc, device, batch_size)
            if retry is None:
                raise
            batch_size = retry
            continue
        out[done:done + len(part)] = p
        done += len(part)
        progress(done, len(centers), label)
        if cancel is not None:
            cancel.check()
    return out
