#!/usr/bin/env python
"""The README's screenshot: `lungview SCAN --screenshot` run --runs times in fresh processes
(each a cold first detection, as a reader's, with the default backend: its exports made once by
an untimed run before), the detection times its status bar shows printed, and the run with the
median time kept, so that the picture shows the median.

    xvfb-run -a .venv/bin/python scripts/make_screenshot.py [SCAN] [--runs 5] [--out docs/screenshot-lidc-idri-0001.png]

SCAN defaults to ../shared/data/lidc-idri-0001/dicom, the models to the book's in ../shared/models/book/.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SEG = SHARED / "models/book/seg_2020-01-26_19.45.12_w4d3c1-bal_1_nodupe-label_pos-d1_fn8-adam.best.state"
CLS = SHARED / "models/book/cls_2020-02-06_14.16.55_final-nodule-nonnodule.best.state"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scan", nargs="?", default=str(SHARED / "data/lidc-idri-0001/dicom"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "docs/screenshot-lidc-idri-0001.png")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", LUNGVIEW_HOME=str(tmp / "home"))
    runs = []
    for k in range(-1, args.runs):  # run -1 makes the backend's exports (once per machine), untimed
        shot = tmp / f"shot{k}.png"
        proc = subprocess.run([sys.executable, "-m", "lungview", args.scan, "--seg-model", str(SEG), "--cls-model",
                               str(CLS), "--device", "cpu", "--screenshot", str(shot)],
                              capture_output=True, text=True, env=env, cwd=REPO)
        m = re.search(r"detected in ([0-9.]+) s", proc.stdout)
        if proc.returncode != 0 or m is None:
            sys.stderr.write(proc.stdout + proc.stderr[-2000:])
            return 1
        if k < 0:
            continue
        runs.append((float(m.group(1)), shot))
        print(f"run {k + 1}: detected in {m.group(1)} s")
    times = sorted(t for t, _ in runs)
    median = statistics.median_low(times)
    keep = next(shot for t, shot in runs if t == median)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keep, args.out)
    print(f"status-bar detection time over {args.runs} runs: median {median:.1f} s ({times[0]:.1f}-{times[-1]:.1f} s); "
          f"kept the median run as {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
