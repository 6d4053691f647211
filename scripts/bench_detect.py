#!/usr/bin/env python
"""Detection speed: LungView's pipeline against a straightforward re-statement of the book's
recipe (p2ch14 nodule_analysis: fp32, 4 slices and 4 crops per forward, whole 512x512 slices,
scipy erosion/label/center_of_mass over the whole volume), same scan, same models, same process.

Prints per-step times (the scan already in memory), the candidates and detections of each, the
ratio, and the peak memory of one run of each in a forked child (RSS growth).

    python scripts/bench_detect.py [SCAN] [--device cpu|cuda] [--repeat 2]

SCAN defaults to ../shared/data/lidc-idri-0001/dicom; the models to ../shared/models/book/.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from lungview.inference.device import resolve_device
from lungview.inference.pipeline import Pipeline
from lungview.io import open_volume
from lungview.models import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SEG = SHARED / "models/book/seg_2020-01-26_19.45.12_w4d3c1-bal_1_nodupe-label_pos-d1_fn8-adam.best.state"
CLS = SHARED / "models/book/cls_2020-02-06_14.16.55_final-nodule-nonnodule.best.state"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def book_recipe(vol, seg, cls, device) -> tuple[dict, int, int]:
    """The book's segmentCt -> groupSegmentationOutput -> classifyCandidates, restated."""
    times = {}
    hu = vol.hu.astype(np.float32).clip(-1000, 1000)  # the book's Ct keeps a clipped float copy
    t0 = time.perf_counter()
    out = np.zeros(hu.shape, dtype=np.float32)
    n = hu.shape[0]
    with torch.no_grad():
        for start in range(0, n, 4):
            ks = range(start, min(start + 4, n))
            batch = np.stack([hu[np.clip(np.arange(k - 3, k + 4), 0, n - 1)] for k in ks])
            pred = seg(torch.from_numpy(batch).to(device))
            out[start:start + len(ks)] = pred[:, 0].cpu().numpy()
    _sync(device)
    times["segmentation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clean = ndimage.binary_erosion(out > 0.5, iterations=1)
    labels, count = ndimage.label(clean)
    centers = ndimage.center_of_mass(hu + 1001, labels=labels, index=np.arange(1, count + 1))
    times["grouping"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = []
    with torch.no_grad():
        for start in range(0, len(centers), 4):
            crops = []
            for c in centers[start:start + 4]:
                sl = []
                for axis, (v, w) in enumerate(zip(c, (32, 48, 48))):
                    s = int(round(v - w / 2))
                    s = max(0, min(s, hu.shape[axis] - w))
                    sl.append(slice(s, s + w))
                crops.append(hu[tuple(sl)])
            _, p = cls(torch.from_numpy(np.stack(crops)[:, None]).to(device))
            probs += p[:, 1].cpu().tolist()
    _sync(device)
    times["classification"] = time.perf_counter() - t0
    return times, count, int(np.sum(np.array(probs) > 0.5))


def ours(vol, pipeline) -> tuple[dict, int, int]:
    result = pipeline.run(vol)
    _sync(pipeline.device.device)
    return result.timings_s, result.candidates, len(result.above(0.5))


def _child(fn, queue):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)


def peak(fn) -> int:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, q))
    p.start()
    v = q.get()
    p.join()
    return v


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scan", nargs="?", default=str(SHARED / "data/lidc-idri-0001/dicom"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true", help="skip the forked peak-memory runs")
    args = ap.parse_args()
    vol = open_volume(args.scan)
    info = resolve_device(args.device)
    seg, cls = load_checkpoint(SEG, "segmentation"), load_checkpoint(CLS, "nodule")
    pipeline = Pipeline(seg, cls, info)
    book_seg = load_checkpoint(SEG, "segmentation").module.to(info.device)
    book_cls = load_checkpoint(CLS, "nodule").module.to(info.device)
    print(f"scan {vol.shape} from {args.scan}; device {info.name}{', bf16' if info.bf16 else ', fp32'}")
    ours(vol, pipeline)  # warm-up: kernels, caches
    runs = [ours(vol, pipeline) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: sum(r[0].values()))
    t_book, n_book, d_book = book_recipe(vol, book_seg, book_cls, info.device)
    total_ours, total_book = sum(best[0].values()), sum(t_book.values())
    print(f"{'step':16} {'lungview s':>11} {'book recipe s':>14}")
    for step in ("lung_mask", "segmentation", "grouping", "classification", "malignancy", "measurement"):
        print(f"{step:16} {best[0].get(step, 0.0):11.3f} {t_book.get(step, float('nan')):14.3f}")
    print(f"{'total':16} {total_ours:11.3f} {total_book:14.3f}   ratio {total_book / total_ours:.1f}x")
    print(f"candidates       {best[1]:11d} {n_book:14d}")
    print(f"p_nodule > 0.5   {best[2]:11d} {d_book:14d}")
    if not args.no_memory and info.device.type == "cpu":
        pa = peak(lambda: pipeline.run(vol))
        pb = peak(lambda: book_recipe(vol, book_seg, book_cls, info.device))
        print(f"peak memory      {pa / 2**20:9.0f} MiB {pb / 2**20:12.0f} MiB   "
              f"(scan itself {vol.hu.nbytes / 2**20:.0f} MiB int16)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
