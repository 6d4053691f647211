#!/usr/bin/env python
"""Opening scans: LungView's open_volume against plain SimpleITK on the same files, same run.

Writes a seeded 512x512xN phantom as a DICOM series and as a .mhd into a temporary folder, then
times each reader (median of --repeat runs, alternating) and measures the peak memory of one
open in a forked child (ru_maxrss above the child's starting RSS, as a multiple of the int16
volume). Goal: open_volume at most 1.2x SimpleITK's time; peak under 2.5x the volume.

    .venv/bin/python scripts/bench_io.py [--slices 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lungview.io import open_volume
from lungview.io.write import write_dicom_series, write_volume
from lungview.synthetic import make_phantom


def sitk_dicom(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()  # voxels in memory; numpy can view them without a copy


def sitk_file(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def ours(path: Path) -> np.ndarray:
    return open_volume(path).hu


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _child(fn, path, queue):
    base = _rss_kib()
    fn(path)
    queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)


def peak_bytes(fn, path) -> int:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, path, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def timed(fn, path, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        ph = make_phantom(0, size=args.size, slices=args.slices, pixel_mm=0.7, slice_mm=1.0)
        print(f"phantom {ph.volume.shape} made in {time.perf_counter() - t0:.2f} s")
        write_dicom_series(ph.volume, tmp / "dicom")
        mhd = write_volume(ph.volume, tmp / "scan.mhd")
        nbytes = ph.volume.hu.nbytes
        del ph
        cases = [("DICOM series", tmp / "dicom", sitk_dicom), ("MetaImage .mhd", mhd, sitk_file)]
        print(f"{args.repeat} runs each after one warm-up, alternating; median (min-max)")
        print(f"{'case':16} {'lungview s':>20} {'SimpleITK s':>20} {'ratio':>6} "
              f"{'peak lungview':>14} {'peak SimpleITK':>15}")
        for name, path, ref in cases:
            ours(path), ref(path)  # warm the page cache and imports
            a, b = [], []
            for _ in range(args.repeat):
                a += timed(ours, path, 1)
                b += timed(ref, path, 1)
            ta, tb = statistics.median(a), statistics.median(b)
            pa, pb = peak_bytes(ours, path) / nbytes, peak_bytes(ref, path) / nbytes
            sa, sb = f"{ta:.3f} ({min(a):.3f}-{max(a):.3f})", f"{tb:.3f} ({min(b):.3f}-{max(b):.3f})"
            print(f"{name:16} {sa:>20} {sb:>20} {ta / tb:6.2f} {pa:13.2f}x {pb:14.2f}x")
    print(f"(volume: {nbytes / 2**20:.0f} MiB int16; peak = max RSS growth while opening once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
