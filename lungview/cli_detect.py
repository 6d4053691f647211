"""`lungview detect` and `lungview evaluate`."""

from __future__ import annotations

import json
import sys

from lungview.core import LungViewError
from lungview.core.findings import NO_MALIGNANCY
from lungview.inference.evaluate import MAX_MARKS


def add_commands(sub, parser_class) -> None:
    det = sub.add_parser("detect", help="find nodules in one or more scans")
    det.add_argument("paths", nargs="+", metavar="PATH", help="scans (folders or files)")
    det.add_argument("--seg-model", help="segmentation checkpoint (book .state or LungView .pt)")
    det.add_argument("--cls-model", help="nodule classifier checkpoint")
    det.add_argument("--mal-model", help="malignancy classifier checkpoint")
    det.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    det.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                     help="auto: bf16 on GPUs and on CPUs with native bf16, else fp32")
    det.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "openvino"),
                     help="what runs the networks on the CPU: auto (OpenVINO when installed, else PyTorch), torch, "
                          "onnxruntime or openvino (pip install 'lungview[openvino]'); GPUs run PyTorch")
    det.add_argument("--threshold", type=float,
                     help="list detections with p_nodule >= this (0 lists every candidate, for FROC); default: the "
                          "nodule classifier's working threshold (0.5, the book's; a fine-tuned model's own)")
    det.add_argument("--series", help="SeriesInstanceUID when a folder holds several")
    det.add_argument("--allow-gaps", action="store_true",
                     help="fill runs of more than two missing slices by interpolation instead of refusing the scan")
    det.add_argument("--out", help="write the detections to FILE.csv or FILE.json")
    det.add_argument("--workspace", metavar="DIR", help="also keep the results there, as the viewer does: "
                     "detections at or above --threshold join each scan's review as unreviewed findings")
    det.add_argument("--json", action="store_true", help="print one JSON object")
    det.add_argument("--nproc", type=int, metavar="N", help="split the scans over N processes on this machine "
                                                          "(torchrun; one GPU each where there are GPUs)")
    det.add_argument("--debug", action="store_true", help="show tracebacks")
    det.set_defaults(func=cmd_detect)

    ev = sub.add_parser("evaluate", help="score detections as LUNA16's official evaluation does (and the book's rule)")
    ev.add_argument("detections", help="detect's .csv or .json, or any LUNA16 results CSV")
    ev.add_argument("annotations", help="LUNA16 annotations.csv (an optional 'malignant' column fills the confusion table)")
    ev.add_argument("--seriesuids", metavar="FILE",
                    help="LUNA16's seriesuids.csv: the scans that count (default: those in the detections file)")
    ev.add_argument("--excluded", metavar="FILE",
                    help="LUNA16's annotations_excluded.csv: marks on these count neither as hits nor as false positives")
    ev.add_argument("--max-marks", type=int, default=MAX_MARKS, metavar="N",
                    help=f"keep the N most probable marks per scan, as LUNA16 (default {MAX_MARKS}; 0: all)")
    ev.add_argument("--bootstrap", type=int, default=0, metavar="N",
                    help="confidence intervals from N resamplings of the scans (LUNA16 used 1000)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    ev.add_argument("--threshold", type=float, default=0.5, help="operating point for sensitivity and FP/scan")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--debug", action="store_true")
    ev.set_defaults(func=cmd_evaluate)


def _models(args):
    from lungview.models.registry import ModelCache, resolve_models

    choices = resolve_models(args.seg_model, args.cls_model, args.mal_model)
    cache = ModelCache()
    loaded = {role: (cache.get(c.path, role) if c else None, c) for role, c in choices.items()}
    return loaded


def cmd_detect(args) -> int:
    """One process, or under torchrun several: each takes every N-th scan (reading the next while
    the current one runs), process 0 gathers the results in the order of the paths and alone
    writes and prints. A scan that fails is reported and skipped; the others go on."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from lungview.detect_io import scan_record
    from lungview.inference.backends import resolve_backend
    from lungview.inference.device import resolve_device
    from lungview.inference.pipeline import Pipeline
    from lungview.io import open_volume
    from lungview.training import distributed

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise LungViewError(f"--threshold must lie in [0, 1], not {args.threshold}")
    if args.out and not args.out.lower().endswith((".csv", ".json")):
        raise LungViewError(f"{args.out}: --out must end in .csv or .json")
    if args.nproc is not None:
        if args.workspace:
            raise LungViewError("--workspace keeps the results of one process: run it without --nproc")
        return distributed.launch(args.nproc, args.argv)
    if distributed.launched() and args.workspace:
        raise LungViewError("--workspace keeps the results of one process: run it without torchrun")
    device = distributed.init_from_env(resolve_device(args.device, args.precision), gather_only=True)
    rank, size = distributed.rank_and_size()
    loaded = _models(args)
    workspace = None
    if args.workspace:
        from lungview.review.workspace import Workspace

        workspace = Workspace(args.workspace)  # locked now: a busy workspace fails before the work
    pipeline = Pipeline(loaded["segmentation"][0], loaded["nodule"][0], device,
                        loaded["malignancy"][0], backend=resolve_backend(args.backend, device))
    threshold = pipeline.cls.card.threshold if args.threshold is None else args.threshold
    model_info = {role: {"label": m.label, "origin": c.origin, "path": str(c.path)} if m else None
                  for role, (m, c) in loaded.items()}
    demo = any(c is not None and c.origin == "demo" for _, c in loaded.values())
    mine = list(range(rank, len(args.paths), size))  # this process's scans (indices into the paths)
    done, failures = {}, {}
    bar = tqdm(mine, desc="detect" if size == 1 else f"detect (process {rank + 1}/{size})", unit="scan",
               file=sys.stderr, delay=1.0, disable=len(args.paths) == 1 and args.json)

    def read(i):
        return open_volume(args.paths[i], series=args.series, allow_gaps=args.allow_gaps)

    with ThreadPoolExecutor(max_workers=1) as reader:  # the next scan is read while this one runs
        ahead = reader.submit(read, mine[0]) if mine else None
        for n, i in enumerate(bar):
            path = args.paths[i]
            try:
                vol = ahead.result()
            except LungViewError as exc:
                vol, failures[i] = None, str(exc)
            ahead = reader.submit(read, mine[n + 1]) if n + 1 < len(mine) else None
            if vol is None:
                bar.write(f"lungview: error: {failures[i]}", file=sys.stderr)
                continue

            def progress(d, total, message, _bar=bar):
                _bar.set_postfix_str(f"{message} {d}/{total}", refresh=False)

            try:
                result = pipeline.run(vol, progress)
            except LungViewError as exc:
                failures[i] = str(exc)
                bar.write(f"lungview: error: {exc}", file=sys.stderr)
                continue
            record = scan_record(path, vol, result, device, model_info, demo)
            done[i] = {**record, "threshold": threshold,
                       "detections": [d.to_dict() for d in result.above(threshold)]}
            if workspace is not None:
                stored = {**record, "threshold": threshold}  # every detection: the viewer's slider
                matched, added = workspace.record_detection(vol, path, stored, threshold)
                bar.write(f"{path}: {added} new finding(s), {matched} known one(s) updated in {workspace.root}",
                          file=sys.stderr)
            del vol
    bar.close()
    if workspace is not None:
        workspace.close()
    done, failures = distributed.gather_to_first(done), distributed.gather_to_first(failures)
    distributed.finish()
    if rank != 0:
        return 0  # process 0 gives the run's status (torchrun stops the others when one fails)
    scans = [done[i] for i in sorted(done)]
    if args.out:
        from lungview.detect_io import write_results

        write_results(args.out, scans)
    if args.json:
        print(json.dumps({"scans": scans}, indent=2))
    else:
        _print_scans(scans, threshold)
    if size > 1 and failures:
        sys.stderr.write(f"lungview: {len(failures)} of {len(args.paths)} scan(s) failed: "
                         + ", ".join(args.paths[i] for i in sorted(failures)) + "\n")
    return 2 if failures else 0


def _print_scans(scans, threshold) -> None:
    for scan in scans:
        print(f"{scan['path']}  ({scan['series_uid'] or 'no series UID'})")
        print(f"  device: {scan['device']}, networks run by {scan['backend']}")
        for role, m in scan["models"].items():
            print(f"  {role:12} {m['label'] + ' [' + m['origin'] + ']' if m else NO_MALIGNANCY}")
        t = scan["timings_s"]
        print("  timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()) + f"; total {sum(t.values()):.2f} s")
        for note in scan["notes"]:
            print(f"  note: {note}")
        dets = scan["detections"]
        print(f"  {len(dets)} detection(s) with p_nodule >= {threshold:g} of {scan['candidates']} candidates")
        if dets:
            # sizes as the JSON and CSV hold them (to 0.01 mm): rounded again to 0.1 mm, a 6.9497 mm
            # nodule would read 7.0 here and 6.9 in the viewer
            print(f"  {'x mm':>8} {'y mm':>8} {'z mm':>8} {'p_nod':>6} {'p_mal':>6} {'diam':>7} {'long':>7} "
                  f"{'short':>7} {'mm3':>8}  size")
        for d in dets:
            x, y, z = d["center_xyz"]
            p_mal = "-" if d["p_malignant"] is None else f"{d['p_malignant']:.3f}"
            print(f"  {x:8.1f} {y:8.1f} {z:8.1f} {d['p_nodule']:6.3f} {p_mal:>6} {d['diameter_mm']:7.2f} "
                  f"{d['long_axis_mm']:7.2f} {d['short_axis_mm']:7.2f} {d['volume_mm3']:8.0f}  {d['size_category']}"
                  + "".join(f"  ({n})" for n in d["notes"]))


def _truths(path: str, excluded: bool):
    from lungview.inference.evaluate import Truth
    from lungview.io.annotations import read_annotations

    out = []
    for a in read_annotations(path):
        flag = a.extra.get("malignant")
        malignant = None if flag in (None, "") else str(flag).strip().lower() in ("1", "true", "yes")
        out.append(Truth(a.series_uid, a.center_xyz, a.diameter_mm, malignant, excluded))
    return out


def cmd_evaluate(args) -> int:
    from lungview.detect_io import read_detections
    from lungview.inference.evaluate import RULES, evaluate
    from lungview.io.annotations import read_seriesuids

    if args.max_marks < 0 or args.bootstrap < 0:
        raise LungViewError("--max-marks and --bootstrap must not be negative")
    dets, found = read_detections(args.detections)
    truths = _truths(args.annotations, False) + (_truths(args.excluded, True) if args.excluded else [])
    warnings = []
    if args.seriesuids:
        scans = read_seriesuids(args.seriesuids)
        stray = len({d.scan for d in dets} - set(scans))
        if stray:
            warnings.append(f"{stray} scan(s) of the detections file are not in {args.seriesuids} and were ignored")
    else:
        scans = found
        warnings.append(f"no --seriesuids: counting the {len(scans)} scan(s) named in {args.detections}; "
                        "scans without any mark are missing from a CSV, which overstates FP/scan and "
                        "leaves their nodules out")
    if not scans:
        raise LungViewError(f"{args.detections}: no scans to evaluate")
    wanted = set(scans)
    outside = sum(1 for t in truths if t.scan not in wanted and not t.excluded)
    if outside:
        warnings.append(f"{outside} annotation(s) of scans that are not evaluated were ignored")
    results = [evaluate(dets, truths, scans, rule, args.threshold, args.max_marks, args.bootstrap, args.seed)
               for rule in RULES]
    if args.json:
        print(json.dumps({"evaluations": [r.to_dict() for r in results], "warnings": warnings}, indent=2))
        return 0
    for w in warnings:
        sys.stderr.write(f"lungview: warning: {w}\n")
    for r in results:
        print(f"rule {r.rule}: {r.true_positives}/{r.nodules} nodules found (sensitivity {r.sensitivity:.3f}), "
              f"{r.false_positives} false positives ({r.fp_per_scan:.2f} per scan over {r.scans} scans) "
              f"at p_nodule >= {r.threshold:g}")
        extra = []
        if r.excluded_nodules:
            extra.append(f"{r.excluded_nodules} excluded annotations, {r.ignored_on_excluded} marks on them ignored")
        if r.double_detections:
            extra.append(f"{r.double_detections} second marks on a nodule ignored")
        if extra:
            print("  " + "; ".join(extra))
        print("  FROC: " + ", ".join(f"{k:g} FP/scan {v:.3f}" for k, v in r.froc.items()) + f"; CPM {r.cpm:.3f}")
        if r.bootstrap:
            b = r.bootstrap
            print(f"  bootstrap ({b['samples']} resamplings of the scans, {100 * b['confidence']:.0f}% interval): "
                  f"CPM {b['cpm']['low']:.3f} .. {b['cpm']['high']:.3f}")
        cols = list(next(iter(r.confusion.values())))
        print("  " + " " * 12 + "".join(f"{c:>16}" for c in cols))
        for row, counts in r.confusion.items():
            print(f"  {row:12}" + "".join(f"{counts[c]:>16}" for c in cols))
    return 0
