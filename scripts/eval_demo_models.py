#!/usr/bin/env python
"""The shipped demo models, evaluated with today's pipeline on unseen seeded phantoms (the seeds
their model cards were evaluated on when they were trained, by default): LUNA16's rule and
FROC (every candidate, no mark limit), sensitivity and false positives per scan at p >= 0.5,
malignancy AUC. The cards keep the figures of training time; this prints the current ones.

    .venv/bin/python scripts/eval_demo_models.py [--seeds card|test] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys

from lungview.cli import cli_progress
from lungview.inference.device import resolve_device
from lungview.models.registry import ModelCache, resolve_models
from lungview.training.demo import EVAL_SEED0, evaluate_models

SEEDS = {"card": [EVAL_SEED0 + i for i in range(10)],  # recipe seed 0: what the cards were evaluated on
         "test": [EVAL_SEED0 + 500 + i for i in range(10)]}  # tests/inference/test_demo_models.py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", choices=sorted(SEEDS), default="card")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    choice = resolve_models(use_user_dir=False)
    cache = ModelCache()
    models = {role: cache.get(c.path, role) if c else None for role, c in choice.items()}
    device = resolve_device(args.device)
    seeds = SEEDS[args.seeds]
    print(f"demo models on phantom seeds {seeds[0]}..{seeds[-1]}, {device.name}")
    for role, m in models.items():
        print(f"  {role:12} card metrics at training time: cpm {m.card.metrics.get('cpm')}, "
              f"malignancy AUC {m.card.metrics.get('malignancy_auc')}")
    with cli_progress("evaluating") as progress:
        metrics = evaluate_models(models["segmentation"], models["nodule"], models["malignancy"], device, seeds,
                                  progress)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
