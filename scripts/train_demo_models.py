#!/usr/bin/env python
"""Train the shipped demo models on seeded synthetic phantoms and write them, with model cards,
to lungview/resources/models/ (or --out). About 20-30 minutes on a 2-core CPU.

    python scripts/train_demo_models.py [--seed 0] [--out DIR] [--device auto] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lungview.cli import cli_progress
from lungview.inference.device import resolve_device
from lungview.models.registry import demo_model_dir
from lungview.training.demo import Recipe, train_demo_models


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=demo_model_dir())
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="a few steps of each, to check the recipe runs")
    ap.add_argument("--reuse-seg", type=Path, help="resume: the seg_demo.partial.pt an interrupted run saved")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = resolve_device(args.device)
    recipe = Recipe(seed=args.seed)
    if args.quick:
        recipe = Recipe(seed=args.seed, train_scans=2, eval_scans=1, seg_steps=5, cls_steps=3, mal_steps=2,
                        mine_scans=1)
    print(f"training demo models on {device.name}{' (bf16)' if device.bf16 else ''} -> {args.out}")
    t0 = time.perf_counter()
    with cli_progress("training") as progress:
        paths = train_demo_models(args.out, device, recipe, progress=progress,
                                  log=lambda m: print(m, flush=True), reuse_seg=args.reuse_seg)
    for role, path in paths.items():
        print(f"{role:12} {path}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
