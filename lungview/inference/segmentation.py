"""Segmentation over every lung slice, each slice cropped to its lung outline plus a margin
wider than the U-Net's receptive field, so that the result inside the lungs is the same as on
the whole slice."""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from lungview.core import CtVolume
from lungview.core.jobs import CancelToken, ProgressCallback, no_progress
from lungview.inference.device import DeviceInfo, autocast, smaller_batch
from lungview.inference.lungmask import LungMask
from lungview.models.checkpoint import ModelCard, book_card
from lungview.models.fused import FusedUNet
from lungview.models.nets import UNetWrapper

MARGIN_PX = 32  # > the receptive-field radius of the depth-3 U-Net (about 22 px at this depth)
SHAPE_STEP = 32  # crop sizes rounded up to limit the number of distinct kernel shapes


_FUSED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def inference_net(model: torch.nn.Module, device: DeviceInfo) -> tuple[torch.nn.Module, torch.dtype | None]:
    """The network to run and the input dtype it wants: the book's U-Net with its batch norms
    folded (FusedUNet) and, for bf16, its weights in bf16 (no per-layer casts); any other
    module as it is, under autocast. Cached per module and rebuilt when its weights change."""
    if not isinstance(model, UNetWrapper) or model.training or model.unet.depth != 3:
        return model.to(device.device).to(memory_format=torch.channels_last), None
    version = sum(p._version for p in model.parameters()) + sum(b._version for b in model.buffers())
    key = (version, str(device.device), device.bf16)
    cached = _FUSED.get(model)
    if cached is None or cached[0] != key:
        dtype = torch.bfloat16 if device.bf16 else torch.float32
        net = FusedUNet(model).eval().to(device.device, dtype).to(memory_format=torch.channels_last)
        cached = (key, net, dtype)
        _FUSED[model] = cached
    return cached[1], cached[2]


@dataclass
class Segmentation:
    prob: np.ndarray  # uint8, probability * 255, full volume shape; 0 where not run
    slices_run: int
    pixels_run: int


def _crop_bounds(mask: LungMask | None, k: int, shape, multiple: int, per_slice: bool = True):
    _, rows, cols = shape
    box = None if mask is None else mask.slice_bbox(k)
    if mask is not None and box is None:
        return None
    if box is not None and not per_slice:  # one crop for every slice: large batches on GPUs
        box = mask.bbox()[2:]
    if box is None:
        return 0, rows, 0, cols
    r0, r1, c0, c1 = box
    bounds = []
    for lo, hi, size in ((r0, r1, rows), (c0, c1, cols)):
        lo = max(0, (lo - MARGIN_PX) // multiple * multiple)
        want = -(-(hi + MARGIN_PX - lo) // SHAPE_STEP) * SHAPE_STEP
        hi = min(size, lo + want)
        lo = max(0, min(lo, (hi - want) // multiple * multiple))
        bounds += [lo, hi]
    return tuple(bounds)


def segmentation_input(hu: np.ndarray, k: int, box, card: ModelCard) -> np.ndarray:
    """(2 * context + 1, H, W) float32 over box (row_lo, row_hi, col_lo, col_hi): slice k and
    the card's context slices on each side (clamped at the ends), HU clipped to the card's
    range. Inference and training cut their inputs with this."""
    r0, r1, c0, c1 = box
    idx = np.clip(np.arange(k - card.context, k + card.context + 1), 0, hu.shape[0] - 1)
    slab = hu[idx, r0:r1, c0:c1].astype(np.float32)
    np.clip(slab, *card.hu_clip, out=slab)
    return slab


def _input(hu: np.ndarray, k: int, box, multiple: int, card: ModelCard) -> torch.Tensor:
    """segmentation_input zero-padded up to a multiple of the U-Net's down-sampling."""
    slab = segmentation_input(hu, k, box, card)
    h, w = slab.shape[1:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        slab = np.pad(slab, ((0, 0), (0, ph), (0, pw)))
    return torch.from_numpy(slab)


class _DeviceSlab:
    """The scan inside one box, on the device: batches equal to stacked `_input` crops."""

    def __init__(self, hu: np.ndarray, box, multiple: int, card: ModelCard, device: DeviceInfo):
        r0, r1, c0, c1 = box
        self.slab = torch.from_numpy(np.ascontiguousarray(hu[:, r0:r1, c0:c1])).to(device.device)
        self.offsets = torch.arange(-card.context, card.context + 1, device=device.device)
        self.clip = card.hu_clip
        h, w = r1 - r0, c1 - c0
        self.pad = (0, (-w) % multiple, 0, (-h) % multiple)

    def batch(self, ks: list[int]) -> torch.Tensor:
        k = torch.tensor(ks, device=self.slab.device)
        idx = (k[:, None] + self.offsets).clamp_(0, self.slab.shape[0] - 1)
        x = self.slab[idx].float().clamp_(*self.clip)
        return torch.nn.functional.pad(x, self.pad) if any(self.pad) else x


def _forward(net, dtype, batch: torch.Tensor, box, device: DeviceInfo) -> np.ndarray:
    """The U-Net on a batch of slices: probabilities * 255 as uint8 over the box."""
    r0, r1, c0, c1 = box
    batch = batch.to(device.device, dtype or torch.float32, non_blocking=True)
    batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        with autocast(device) if dtype is None else contextlib.nullcontext():
            out = net(batch)
        values = (out[:, 0, : r1 - r0, : c1 - c0].float() * 255.0).round_()
        return values.to(torch.uint8).cpu().numpy()


def segment(vol: CtVolume, model, device: DeviceInfo, mask: LungMask | None = None,
            batch_size: int | None = None, progress: ProgressCallback = no_progress,
            cancel: CancelToken | None = None, card: ModelCard | None = None) -> Segmentation:
    """Run the segmentation model on every slice that holds lung (every slice without a mask).
    On a CPU each slice gets its own crop and goes through alone (its activations then stay in
    cache: the fastest way there); on a GPU all slices share the lungs' bounding box and go
    through in batches of `batch_size` (default 32, halved on out-of-memory). `model` may be an
    export run by OpenVINO or ONNX Runtime on the CPU (inference.backends.ExportedNet): slice by
    slice too (the lungs' common box holds 1.6 times the pixels on LIDC-IDRI-0001, and a runtime
    takes about as long a pixel either way)."""
    card = card or book_card("segmentation", "book UNetWrapper")
    exported = not isinstance(model, torch.nn.Module)  # an export run by another runtime (inference.backends)
    per_slice = device.device.type == "cpu"
    batch_size = batch_size or (1 if per_slice else 32)
    multiple = getattr(model, "size_multiple", 4)
    prob = np.zeros(vol.shape, dtype=np.uint8)
    jobs = [(k, b) for k in range(vol.shape[0])
            if (b := _crop_bounds(mask, k, vol.shape, multiple, per_slice)) is not None]
    net, dtype = (model, None) if exported else inference_net(model, device)
    # On a GPU every slice shares one box: the scan's part inside it goes to the device once
    # (int16) and the batches are cut there, instead of 7 float32 copies of each slice crossing.
    on_device = _DeviceSlab(vol.hu, jobs[0][1], multiple, card, device) if jobs and not per_slice else None
    pixels = 0
    done = 0
    progress(0, len(jobs), "segmenting")
    while done < len(jobs):
        group = [jobs[done]]
        while (len(group) < batch_size and done + len(group) < len(jobs)
               and jobs[done + len(group)][1] == group[0][1]):
            group.append(jobs[done + len(group)])
        box = group[0][1]
        r0, r1, c0, c1 = box
        ks = [k for k, _ in group]
        try:  # building the batch on the device can run out of memory too
            if exported:
                out = net(np.stack([_input(vol.hu, k, box, multiple, card).numpy() for k in ks]))
                values = np.rint(out[:, 0, : r1 - r0, : c1 - c0] * 255.0).astype(np.uint8)
            else:
                values = _forward(net, dtype, on_device.batch(ks) if on_device is not None else
                                  torch.stack([_input(vol.hu, k, box, multiple, card) for k in ks]), box, device)
        except RuntimeError as exc:
            retry = smaller_batch(exc, device, batch_size)
            if retry is None:
                raise
            batch_size = retry
            continue
        for (k, _), v in zip(group, values):
            prob[k, r0:r1, c0:c1] = v
        pixels += len(group) * (r1 - r0) * (c1 - c0)
        done += len(group)
        progress(done, len(jobs), "segmenting")
        if cancel is not None:
            cancel.check()
    return Segmentation(prob=prob, slices_run=len(jobs), pixels_run=pixels)
