#!/usr/bin/env python
"""Training at LUNA16 scale, measured: the crop cache on a phantom "LUNA16" folder (10 scans of
512 x 512 x 140 voxels, 0.7 x 0.7 x 2 mm, written as subset0/subset1 .mhd files with
annotations.csv and candidates.csv: each phantom's nodules and 100 class-0 candidates in its lungs),
built with 1 and with 2 worker processes (a fresh cache each, 3 runs each, median and range), its
size on disk, a resumed build's time, the rate at which training reads crops from it, the
extrapolation to LUNA16 (888 scans, 1,186 annotations; 100 negatives per scan as `lungview train
--luna16` draws by default); the U-Net's slab cache (its nodules' masks grown and cut) the same way; then `lungview train --luna16` (2 epochs, fold 1) and `lungview detect`
over the 10 scans, each in 1 and in 2 processes (`--nproc`, the machine's threads split between them);
detection also over one scan a process, whose time is the start-up's (model loading, torchrun, CUDA)
plus one scan's: the difference gives the rate an archive sees after start-up.

    .venv/bin/python scripts/bench_scale.py [--out DIR] [--runs 3] [--nproc 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LUNA16_SCANS, LUNA16_ANNOTATIONS, NEGATIVES = 888, 1186, 100
THREADS = os.cpu_count() or 1  # shared between the processes


def phantom_luna16(root: Path, scans: int = 10) -> None:
    from lungview.io.annotations import write_annotations, write_candidates
    from lungview.synthetic import make_phantom, phantom_annotations, write_phantom

    annotations, candidates = [], []
    rng = np.random.default_rng(0)
    for k in range(scans):
        ph = make_phantom(900 + k, size=512, slices=140, pixel_mm=0.7, slice_mm=2.0)
        folder = root / f"subset{k % 2}"
        write_phantom(ph, folder, "mhd")
        (folder / "annotations.csv").unlink()
        annotations += phantom_annotations(ph)
        candidates += [(ph.volume.series_uid, n.center_xyz, 1) for n in ph.nodules]
        lung = np.argwhere(ph.lung_mask)
        candidates += [(ph.volume.series_uid, tuple(ph.volume.irc_to_xyz(lung[i])), 0)
                       for i in rng.choice(len(lung), NEGATIVES, replace=False)]
        print(f"  phantom {k + 1}/{scans} written", flush=True)
    write_annotations(root / "annotations.csv", annotations)
    write_candidates(root / "candidates.csv", candidates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="where the phantoms and caches go (default: a temporary folder)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nproc", default="1,2", help="process counts for training and detection (one per GPU on GPUs)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="lungview-bench-scale-"))
    from lungview.models.checkpoint import load_checkpoint
    from lungview.models.registry import resolve_models
    from lungview.training.cache import crop_cache, slab_cache
    from lungview.training.luna16 import Luna16Masks, luna16_examples, open_luna16

    root = out / "luna16"
    if not (root / "candidates.csv").exists():
        phantom_luna16(root)
    luna = open_luna16(root)
    examples = luna16_examples(luna, "nodule", max_negatives=NEGATIVES)
    card = load_checkpoint(resolve_models(use_user_dir=False)["nodule"].path, "nodule").card
    crops = sum(len(e) for e in examples.values())
    print(f"phantom LUNA16: {len(luna.scans)} scans, {crops} crops (annotations and {NEGATIVES} negatives a scan)")
    times = {}
    for workers in (1, 2):
        runs = []
        for r in range(args.runs):
            shutil.rmtree(out / f"cache-{workers}-{r}", ignore_errors=True)  # a fresh cache (--out may hold one)
            cache = crop_cache(out / f"cache-{workers}-{r}", card, margin=2)
            t0 = time.perf_counter()
            report = cache.build(examples, lambda u: luna.scans[u], card, workers=workers)
            runs.append(time.perf_counter() - t0)
        runs.sort()
        times[workers] = runs
        print(f"  build with {workers} worker(s): median {runs[len(runs) // 2]:.1f} s ({runs[0]:.1f}-{runs[-1]:.1f}, "
              f"{args.runs} runs), {report['bytes'] / 1e6:.0f} MB")
    # resumed: two scans' files gone, the build cuts only those
    cache = crop_cache(out / "cache-2-0", card, margin=2)
    for f in sorted(cache.root.glob("*.npy"))[:2]:
        f.unlink()
    t0 = time.perf_counter()
    report = cache.build(examples, lambda u: luna.scans[u], card, workers=2)
    print(f"  resumed after losing 2 scans' files: {report['cut']} cut, {report['kept']} kept, "
          f"{time.perf_counter() - t0:.1f} s")
    # reading: batches of 32 random crops, as a training step draws them
    store = cache.store([e for u in examples for e in examples[u]], margin=2)
    rng = np.random.default_rng(0)
    store[rng.integers(0, len(store), 32)]  # warm-up: the memory maps opened
    t0 = time.perf_counter()
    for _ in range(50):
        store[rng.integers(0, len(store), 32)]
    rate = 50 * 32 / (time.perf_counter() - t0)
    per_crop = report["bytes"] / crops
    per_scan = np.median(times[2]) / len(luna.scans)
    luna_crops = LUNA16_ANNOTATIONS + LUNA16_SCANS * NEGATIVES
    print(f"  reading 32-crop batches at random: {rate:.0f} crops/s")
    print(f"extrapolated to LUNA16 ({LUNA16_SCANS} scans, {luna_crops} crops): {luna_crops * per_crop / 1e9:.1f} GB; "
          f"cutting at {per_scan:.2f} s a scan with 2 workers here, {LUNA16_SCANS * per_scan / 60:.1f} min, from "
          f"scans already in the page cache: reading LUNA16's ~120 GB of .raw files from disk once comes on top, "
          f"at the disk's speed, and so does resampling its thinner slices")
    # the U-Net's slabs: the annotated nodules' masks grown and cut, with 2 workers
    seg_examples = luna16_examples(luna, "segmentation")
    seg_card = load_checkpoint(resolve_models(use_user_dir=False)["segmentation"].path, "segmentation").card
    masks = Luna16Masks(luna.annotations)
    runs = []
    for r in range(args.runs):
        shutil.rmtree(out / f"slabs-{r}", ignore_errors=True)
        slabs = slab_cache(out / f"slabs-{r}", seg_card)
        t0 = time.perf_counter()
        report = slabs.build(seg_examples, lambda u: luna.scans[u], seg_card, masks, workers=2)
        runs.append(time.perf_counter() - t0)
    runs.sort()
    nodules = report["crops"]
    store = slabs.slabs([e for u in seg_examples for e in seg_examples[u]], seg_card.context)
    store.draw(rng.integers(0, len(store), 16), rng)
    t0 = time.perf_counter()
    for _ in range(50):
        store.draw(rng.integers(0, len(store), 16), rng)
    seg_rate = 50 * 16 / (time.perf_counter() - t0)
    print(f"  U-Net slabs ({nodules} annotated nodules, masks grown): built with 2 workers in median "
          f"{runs[len(runs) // 2]:.1f} s ({runs[0]:.1f}-{runs[-1]:.1f}, {args.runs} runs), "
          f"{report['bytes'] / 1e6:.0f} MB; drawing random 16-crop batches: {seg_rate:.0f} crops/s")
    print(f"extrapolated to LUNA16's {LUNA16_ANNOTATIONS} annotations: "
          f"{LUNA16_ANNOTATIONS * report['bytes'] / nodules / 1e9:.2f} GB, "
          f"{LUNA16_SCANS * np.median(runs) / len(luna.scans) / 60:.1f} min with 2 workers here")
    # training and detection in 1 and 2 processes (torchrun through --nproc: both sides launched alike)
    scans = sorted(str(p) for p in luna.scans.values())
    for nproc in (int(n) for n in args.nproc.split(",")):
        shutil.rmtree(out / f"home-{nproc}", ignore_errors=True)  # the demo models as parents, no exports made yet
        env = {**os.environ, "LUNGVIEW_HOME": str(out / f"home-{nproc}"), "OMP_NUM_THREADS": str(THREADS // nproc)}
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lungview", "train", "--luna16", str(root), "--role", "nodule",
                               "--fold", "1", "--epochs", "2", "--cache", str(out / "cache-2-0"), "--json",
                               "--nproc", str(nproc)], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode:
            print(done.stderr[-2000:])
            return 1
        r = json.loads(done.stdout)
        samples = 2 * 32 * max(4, -(-2 * max(r["counts"]["train"]["positives"], r["counts"]["train"]["negatives"]) // 32))
        print(f"  training, {nproc} process(es) x {THREADS // nproc} thread(s): 2 epochs, {samples} samples, "
              f"{r['seconds']:.1f} s in the fine-tune ({samples / r['seconds']:.0f} samples/s, validation included), "
              f"{wall:.1f} s with start-up")
        walls = {}
        # one scan a process, twice (the first makes the CPU backend's exports, once per home), then all of them:
        # the one-scan wall is the start-up's and one scan's, the difference the rate after start-up
        for n in (nproc, nproc, len(scans)):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "lungview", "detect", *scans[:n], "--out",
                                   str(out / f"d{nproc}-{n}.csv"), "--nproc", str(nproc)],
                                  env=env, capture_output=True, text=True)
            walls[n] = time.perf_counter() - t0
            if done.returncode:
                print(done.stderr[-2000:])
                return 1
        wall, more = walls[len(scans)], len(scans) - nproc
        after = wall - walls[nproc]  # the other scans' time
        print(f"  detection, {nproc} process(es) x {THREADS // nproc} thread(s): {len(scans)} scans in {wall:.1f} s, "
              f"{60 * len(scans) / wall:.1f} scans/min (model loading and start-up included, exports made); "
              f"{nproc} scan(s), one a process, in {walls[nproc]:.1f} s, so after start-up {60 * more / after:.1f} "
              f"scans/min ({after * nproc / more:.2f} s a scan in each process)")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
