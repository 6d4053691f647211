#!/usr/bin/env python
"""What fine-tuning on a reader's corrections buys, measured (issue 9's bench):

(a) a "new site": phantoms unlike the demo models' training data (noise 50 HU instead of 10-30,
    3 mm slices instead of 1.25-2.5 mm). The demo models' sensitivity and false positives per scan
    on 10 unseen such phantoms; then 3 others reviewed from their ground truth (every finding
    confirmed or rejected, as a reader would), the nodule classifier fine-tuned on them, and the
    same 10 phantoms again: at 0.5, at the fine-tuned model's own working threshold (set on its
    validation scan), and at equal sensitivity (the point of the fine-tuned model's FROC where it
    finds as many nodules as the demo models did at 0.5).
(b) LIDC-IDRI-0001 with the book's checkpoints: reviewed from its LUNA16 annotation (the nodule
    confirmed, every other candidate rejected), the classifier fine-tuned on it, and its own false
    positives at 0.5 before and after (trained and scored on the same scan: a check that the
    corrections are learned, not a generalisation figure).
(c) the time of one classifier fine-tune (5 epochs, the defaults) on one reviewed scan.

    .venv/bin/python scripts/bench_finetune.py [--parts abc] [--device auto] [--out DIR] [--lr LR] [--seed N]
                                        [--augmentation parent|book|exact]

Models are registered in a temporary LungView home, never the user's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BOOK = SHARED / "models/book"
SITE = dict(size=512, pixel_mm=0.7, slice_mm=3.0, noise_hu=50.0, nodules=(3, 6))  # the "new site"


def site_phantom(seed):
    from lungview.synthetic import make_phantom

    return make_phantom(seed, slices=int(round(280 / SITE["slice_mm"])), **SITE)


def record_and_review(ws, vol, path, result, truths) -> tuple[int, int]:
    """The detection stored in the workspace as the viewer stores it (every candidate a finding),
    then reviewed from the truth. Returns (confirmed, rejected)."""
    from lungview.detect_io import scan_record
    from lungview.inference.device import resolve_device
    from lungview.training.examples import review_from_truth

    ws.record_detection(vol, path, scan_record(path, vol, result, resolve_device("cpu"), {}), 0.0)
    review = ws.load_review(vol.series_uid)
    counts = review_from_truth(review, truths)
    ws.save_review(vol.series_uid, review)
    return counts


def score(results, truths_by_scan, threshold=0.5):
    from lungview.inference.evaluate import ScoredDetection, Truth, evaluate

    dets = [ScoredDetection(uid, d.center_xyz, d.p_nodule) for uid, r in results.items() for d in r.detections]
    truths = [Truth(uid, c, d) for uid, ts in truths_by_scan.items() for c, d in ts]
    ev = evaluate(dets, truths, list(results), threshold=threshold)
    return ev.sensitivity, ev.fp_per_scan, ev.cpm, ev.true_positives, ev.nodules


def fp_at_sensitivity(results, truths_by_scan, found: int) -> tuple[float, float]:
    """(threshold, false positives per scan) where the detections first find `found` nodules,
    lowering the threshold from the top (a point of the FROC curve: equal sensitivity)."""
    for t in sorted({d.p_nodule for r in results.values() for d in r.detections}, reverse=True):
        _, fps, _, tp, _ = score(results, truths_by_scan, t)
        if tp >= found:
            return t, fps
    return 0.0, float("nan")


def pipeline_with(cls_path, device, seg_path=None, role_paths=None):
    from lungview.inference.pipeline import Pipeline
    from lungview.models.checkpoint import load_checkpoint
    from lungview.models.registry import resolve_models

    choice = resolve_models(seg=seg_path, cls=cls_path, use_user_dir=False)
    mal = None if choice["malignancy"] is None else load_checkpoint(choice["malignancy"].path, "malignancy")
    return Pipeline(load_checkpoint(choice["segmentation"].path, "segmentation"),
                    load_checkpoint(choice["nodule"].path, "nodule"), device, mal)


def part_a(device, out: Path, settings=None) -> None:
    from lungview.review.workspace import Workspace
    from lungview.synthetic import write_phantom
    from lungview.training.runs import train_from_workspace

    base = pipeline_with(None, device)
    test_seeds = [300_000 + k for k in range(10)]
    review_seeds = [310_000 + k for k in range(3)]
    truths, before = {}, {}
    t0 = time.perf_counter()
    test = []
    for seed in test_seeds:
        ph = site_phantom(seed)
        test.append(ph)
        truths[ph.volume.series_uid] = [(n.center_xyz, n.diameter_mm) for n in ph.nodules]
        before[ph.volume.series_uid] = base.run(ph.volume)
    with Workspace(out / "ws-a") as ws:
        for seed in review_seeds:
            ph = site_phantom(seed)
            path = write_phantom(ph, out / f"site-{seed}", "dicom")
            from lungview.io import open_volume

            vol = open_volume(path)
            res = base.run(vol)
            c, r = record_and_review(ws, vol, path, res, [(n.center_xyz, n.diameter_mm) for n in ph.nodules])
            print(f"  reviewed phantom {seed}: {c} confirmed, {r} rejected", flush=True)
        result, version = train_from_workspace(ws, "nodule", device, settings)
    tuned = pipeline_with(version.path, device)
    after = {ph.volume.series_uid: tuned.run(ph.volume) for ph in test}
    s0, f0, c0, tp0, n = score(before, truths)
    s1, f1, c1, tp1, _ = score(after, truths)
    print(f"(a) new site (noise {SITE['noise_hu']:.0f} HU, {SITE['slice_mm']} mm slices), 10 unseen phantoms, "
          f"{n} nodules, at p >= 0.5:")
    print(f"    demo models:          sensitivity {s0:.2f} ({tp0}/{n}), {f0:.2f} FP/scan, CPM {c0:.3f}")
    print(f"    after fine-tuning on 3 reviewed phantoms ({result.seconds:.0f} s, {device.name}, "
          f"lr {result.settings['lr']}, seed {result.settings['seed']}, {result.settings['augmentation']} "
          f"augmentation): "
          f"sensitivity {s1:.2f} ({tp1}/{n}), {f1:.2f} FP/scan, CPM {c1:.3f}")
    print(f"    false positives per scan x{f1 / f0:.2f}" if f0 else "    no false positives before")
    from lungview.models.checkpoint import load_checkpoint

    t_own = load_checkpoint(version.path, "nodule").card.threshold
    s2, f2, _, tp2, _ = score(after, truths, t_own)
    print(f"    at its own working threshold {t_own:.2f} (set on its validation scan): sensitivity {s2:.2f} "
          f"({tp2}/{n}), {f2:.2f} FP/scan" + (f" (x{f2 / f0:.2f})" if f0 else ""))
    t_eq, f_eq = fp_at_sensitivity(after, truths, tp0)
    print(f"    at equal sensitivity ({tp0}/{n} nodules, the fine-tuned model's threshold {t_eq:.2f}): "
          f"{f0:.2f} -> {f_eq:.2f} FP/scan (x{f_eq / f0:.2f}; goal x0.50 or less)" if f0 else "")
    print(f"    the run's verdict on its validation scan: {version.verdict} ({version.reason}); "
          f"{time.perf_counter() - t0:.0f} s in all")


def part_b(device, out: Path) -> None:
    from lungview.io import open_volume
    from lungview.io.annotations import read_annotations
    from lungview.review.workspace import Workspace
    from lungview.training.runs import train_from_workspace

    scan = SHARED / "data/lidc-idri-0001"
    if not scan.exists():
        print("(b) skipped: ../shared/data/lidc-idri-0001 is absent")
        return
    seg = BOOK / "seg_2020-01-26_19.45.12_w4d3c1-bal_1_nodupe-label_pos-d1_fn8-adam.best.state"
    cls = BOOK / "cls_2020-02-06_14.16.55_final-nodule-nonnodule.best.state"
    vol = open_volume(scan / "dicom")
    (ann,) = read_annotations(scan / "luna16-annotations.csv")
    truths = {vol.series_uid: [(ann.center_xyz, ann.diameter_mm)]}
    book = pipeline_with(str(cls), device, str(seg))
    before = book.run(vol)
    with Workspace(out / "ws-b") as ws:
        c, r = record_and_review(ws, vol, scan / "dicom", before, truths[vol.series_uid])
        result, version = train_from_workspace(ws, "nodule", device, model_path=str(cls))
    after = pipeline_with(version.path, device, str(seg)).run(vol)
    s0, f0, *_ = score({vol.series_uid: before}, truths)
    s1, f1, *_ = score({vol.series_uid: after}, truths)
    print(f"(b) LIDC-IDRI-0001, book checkpoints, reviewed ({c} confirmed, {r} rejected), fine-tuned in "
          f"{result.seconds:.0f} s on {device.name}: nodule found {s0:.0f} -> {s1:.0f}, false positives at 0.5 "
          f"{f0:.0f} -> {f1:.0f} (trained and scored on the same scan); verdict {version.verdict}: {version.reason}")


def part_c(device, out: Path) -> None:
    from lungview.io import open_volume
    from lungview.review.workspace import Workspace
    from lungview.synthetic import write_phantom
    from lungview.training.runs import train_from_workspace

    ph = site_phantom(320_000)
    path = write_phantom(ph, out / "one", "dicom")
    vol = open_volume(path)
    res = pipeline_with(None, device).run(vol)
    times = []
    for k in range(3):
        with Workspace(out / f"ws-c{k}") as ws:
            c, r = record_and_review(ws, vol, path, res, [(n.center_xyz, n.diameter_mm) for n in ph.nodules])
            t0 = time.perf_counter()
            result, _ = train_from_workspace(ws, "nodule", device, model_path=str(pipeline_with(None, device).cls.path))
            times.append(time.perf_counter() - t0)
    times.sort()
    print(f"(c) one classifier fine-tune (5 epochs) on one reviewed scan ({c} positive, "
          f"{result.counts['train']['negatives']} negative examples) on {device.name}: median {times[1]:.1f} s "
          f"({times[0]:.1f}-{times[2]:.1f}, 3 runs; goal <= 60 s on the 2-core CPU, <= 5 s on a GPU)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="abc")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, help="where the phantoms and workspaces go (default: a temporary folder)")
    ap.add_argument("--lr", type=float, help="(a): the fine-tune's learning rate (default the book's)")
    ap.add_argument("--seed", type=int, default=0, help="(a): the fine-tune's seed")
    ap.add_argument("--augmentation", default="parent", choices=("parent", "book", "exact"),
                    help="(a): the fine-tune's augmentation (default: the parent's)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="lungview-bench-finetune-"))
    os.environ["LUNGVIEW_HOME"] = str(out / "home")  # the models trained here never reach the user's
    from lungview.inference.device import resolve_device

    device = resolve_device(args.device)
    print(f"device {device.name} (training in fp32 on CPUs, bf16 autocast on GPUs)", flush=True)
    from lungview.training.finetune import Settings

    for part, fn in (("a", part_a), ("b", part_b), ("c", part_c)):
        if part in args.parts:
            if part == "a":
                fn(device, out, Settings(lr=args.lr, seed=args.seed, augmentation=args.augmentation))
            else:
                fn(device, out)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
