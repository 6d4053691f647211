#!/usr/bin/env python
"""Detection speed: LungView's pipeline with each inference backend installed (PyTorch, and on
the CPU ONNX Runtime and OpenVINO running the models' exports) against a straightforward
re-statement of the book's recipe (p2ch14 nodule_analysis: PyTorch, fp32, 4 slices and 4 crops per
forward, whole 512x512 slices, scipy erosion/label/center_of_mass over the whole volume), same
scan, same models.

Every side is treated alike: one warm-up run each (for the exported backends it makes the export
and compiles it), then --repeat runs each, alternating, in the same process; per step and in total
the median and the range (min-max) are printed. With --cold N, N fresh processes per side
(alternating) time the first run after loading the models (and compiling the exports, made
before), as the viewer's first detection after opening a scan does. The exports go to a temporary
user data folder, never the user's.

    .venv/bin/python scripts/bench_detect.py [SCAN] [--device cpu|cuda] [--repeat 3] [--cold 3]
        [--backends torch,onnxruntime,openvino]

SCAN defaults to ../shared/data/lidc-idri-0001/dicom; the models to ../shared/models/book/.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import tempfile
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
    from lungview.inference.backends import LABELS, installed

    vol = open_volume(args.scan)
    info = resolve_device(args.device)
    wanted = args.backends.split(",") if args.backends else [b for b in LABELS if installed(b)]
    if not info.is_cpu:
        wanted = ["torch"]  # the exported backends run on the CPU
    seg, cls = load_checkpoint(SEG, "segmentation"), load_checkpoint(CLS, "nodule")
    sides = {}
    for backend in wanted:
        pipeline = Pipeline(seg, cls, info, backend=backend)
        sides[f"lungview {LABELS[backend]}"] = lambda p=pipeline: ours(vol, p)
    book_seg = load_checkpoint(SEG, "segmentation").module.to(info.device)
    book_cls = load_checkpoint(CLS, "nodule").module.to(info.device)
    sides["book recipe"] = lambda: book_recipe(vol, book_seg, book_cls, info.device)
    return vol, info, sides


def _summary(values) -> str:
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def cold(args, side: str) -> float:
    """Total of the first run in a fresh process (models loaded from disk just before)."""
    cmd = [sys.executable, __file__, args.scan, "--device", args.device, "--one-cold", side,
           "--backends", args.backends or ""]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["total"])


def _bf16_classifier(vol, info, repeat: int) -> None:
    """Why OpenVINO runs the classifiers in fp32: its bf16 classifier on the same candidates, time and
    the largest change in p_nodule."""
    from lungview.inference.backends import export_path
    from lungview.models.export import ExportedNet
    from lungview.inference.classify import classify

    cls = load_checkpoint(CLS, "nodule")
    centres = np.array([d.center_irc for d in Pipeline(load_checkpoint(SEG, "segmentation"), cls, info,
                                                       backend="openvino").run(vol).detections])
    p, times = {}, {}
    for bf16 in (False, True):
        net = ExportedNet(export_path(cls), "openvino", bf16, torch.get_num_threads(), 4)
        classify(vol, centres, net, info, card=cls.card)  # warm-up
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            p[bf16] = classify(vol, centres, net, info, card=cls.card)
            runs.append(time.perf_counter() - t0)
        times[bf16] = runs
    print(f"OpenVINO classifier on these {len(centres)} candidates: fp32 {_summary(times[False]).strip()} s, "
          f"bf16 {_summary(times[True]).strip()} s, bf16 moves p_nodule by up to "
          f"{np.abs(p[True] - p[False]).max():.3f}")


def _versions() -> str:
    from lungview.inference.backends import LABELS, describe, installed

    return ", ".join(describe(b) for b in LABELS if b != "torch" and installed(b)) or "no other runtime"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scan", nargs="?", default=str(SHARED / "data/lidc-idri-0001/dicom"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cold", type=int, default=0, help="fresh processes per side for the first-run time")
    ap.add_argument("--one-cold", help=argparse.SUPPRESS)
    ap.add_argument("--backends", help="comma-separated, of torch, onnxruntime, openvino (default: every one "
                                       "installed; on GPUs PyTorch alone)")
    args = ap.parse_args()
    if not os.environ.get("LUNGVIEW_HOME"):  # the exports in a temporary folder (the cold runs inherit it)
        os.environ["LUNGVIEW_HOME"] = tempfile.mkdtemp(prefix="lungview-bench-detect-")
        atexit.register(shutil.rmtree, os.environ["LUNGVIEW_HOME"], True)
    vol, info, sides = _sides(args)
    if args.one_cold:
        times, _, _ = sides[args.one_cold]()
        print(json.dumps({"total": sum(times.values())}))
        return 0
    print(f"scan {vol.shape} from {args.scan}; device {info.name}{', bf16' if info.bf16 else ', fp32'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {_versions()}")
    for fn in sides.values():  # one warm-up each: kernels, caches, allocator, the exports made and compiled
        fn()
    runs = {name: [] for name in sides}
    for _ in range(args.repeat):
        for name, fn in sides.items():
            runs[name].append(fn())
    names = list(sides)
    width = max(22, *(len(n) + 2 for n in names))
    print(f"{args.repeat} runs each after one warm-up, alternating; median (min-max), seconds")
    print(f"{'step':16}" + "".join(f"{n:>{width}}" for n in names))
    for step in STEPS:
        cells = [_summary([r[0].get(step, 0.0) for r in runs[name]]) if any(step in r[0] for r in runs[name])
                 else "-" for name in names]
        print(f"{step:16}" + "".join(f"{c:>{width}}" for c in cells))
    totals = {name: [sum(r[0].values()) for r in runs[name]] for name in names}
    print(f"{'total':16}" + "".join(f"{_summary(totals[n]):>{width}}" for n in names))
    for name in names[:-1]:
        ratios = [b / a for a, b in zip(totals[name], totals["book recipe"])]
        print(f"ratio book recipe / {name}: median {statistics.median(ratios):.1f}x "
              f"({min(ratios):.1f}-{max(ratios):.1f}x)")
    print(f"{'candidates':16}" + "".join(f"{runs[n][0][1]:>{width}d}" for n in names))
    print(f"{'p_nodule > 0.5':16}" + "".join(f"{runs[n][0][2]:>{width}d}" for n in names))
    if "lungview OpenVINO" in sides and info.bf16:
        _bf16_classifier(vol, info, args.repeat)
    if args.cold:
        firsts = {name: [] for name in names}
        for _ in range(args.cold):
            for name in names:
                firsts[name].append(cold(args, name))
        print(f"first run in a fresh process ({args.cold} each): "
              + ", ".join(f"{n} {_summary(firsts[n]).strip()}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
