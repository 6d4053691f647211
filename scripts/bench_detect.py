#!/usr/bin/env python
"""Detection speed: LungView's pipeline against a straightforward re-statement of the book's
recipe (p2ch14 nodule_analysis: fp32, 4 slices and 4 crops per forward, whole 512x512 slices,
scipy erosion/label/center_of_mass over the whole volume), same scan, same models.

Both sides are treated alike: one warm-up run each, then --repeat runs each, alternating, in
the same process; per step and in total the median and the range (min-max) are printed.
With --cold N, N fresh processes per side (alternating) time the first run after loading the
models, as the viewer's first detection after opening a scan does.

    .venv/bin/python scripts/bench_detect.py [SCAN] [--device cpu|cuda] [--repeat 3] [--cold 3]

SCAN defaults to ../shared/data/lidc-idri-0001/dicom; the models to ../shared/models/book/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from lungview.inference.device import resolve_device
from lungview.inference.pipeline import STEPS, Pipeline
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
    return dict(result.timings_s), result.candidates, len(result.above(0.5))


def _sides(args):
    vol = open_volume(args.scan)
    info = resolve_device(args.device)
    pipeline = Pipeline(load_checkpoint(SEG, "segmentation"), load_checkpoint(CLS, "nodule"), info)
    book_seg = load_checkpoint(SEG, "segmentation").module.to(info.device)
    book_cls = load_checkpoint(CLS, "nodule").module.to(info.device)
    return vol, info, {"lungview": lambda: ours(vol, pipeline),
                       "book recipe": lambda: book_recipe(vol, book_seg, book_cls, info.device)}


def _summary(values) -> str:
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def cold(args, side: str) -> float:
    """Total of the first run in a fresh process (models loaded from disk just before)."""
    cmd = [sys.executable, __file__, args.scan, "--device", args.device, "--one-cold", side]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["total"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scan", nargs="?", default=str(SHARED / "data/lidc-idri-0001/dicom"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cold", type=int, default=0, help="fresh processes per side for the first-run time")
    ap.add_argument("--one-cold", help=argparse.SUPPRESS)
    args = ap.parse_args()
    vol, info, sides = _sides(args)
    if args.one_cold:
        times, _, _ = sides[args.one_cold]()
        print(json.dumps({"total": sum(times.values())}))
        return 0
    print(f"scan {vol.shape} from {args.scan}; device {info.name}{', bf16' if info.bf16 else ', fp32'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for fn in sides.values():  # one warm-up each: kernels, caches, allocator
        fn()
    runs = {name: [] for name in sides}
    for _ in range(args.repeat):
        for name, fn in sides.items():
            runs[name].append(fn())
    print(f"{args.repeat} runs each after one warm-up, alternating; median (min-max), seconds")
    print(f"{'step':16} {'lungview':>22} {'book recipe':>22}")
    for step in STEPS:
        cells = [_summary([r[0].get(step, 0.0) for r in runs[name]]) if any(step in r[0] for r in runs[name])
                 else f"{'-':>22}" for name in sides]
        print(f"{step:16} {cells[0]:>22} {cells[1]:>22}")
    totals = {name: [sum(r[0].values()) for r in runs[name]] for name in sides}
    print(f"{'total':16} {_summary(totals['lungview']):>22} {_summary(totals['book recipe']):>22}")
    ratios = [b / a for a, b in zip(totals["lungview"], totals["book recipe"])]
    print(f"ratio book / lungview: median {statistics.median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f}x)")
    print(f"candidates       {runs['lungview'][0][1]:>22d} {runs['book recipe'][0][1]:>22d}")
    print(f"p_nodule > 0.5   {runs['lungview'][0][2]:>22d} {runs['book recipe'][0][2]:>22d}")
    if args.cold:
        firsts = {name: [] for name in sides}
        for _ in range(args.cold):
            for name in sides:
                firsts[name].append(cold(args, name))
        print(f"first run in a fresh process ({args.cold} each): lungview {_summary(firsts['lungview'])}, "
              f"book recipe {_summary(firsts['book recipe'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
