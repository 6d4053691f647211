"""`lungview train` (fine-tune a model on a workspace's reviews or on LUNA16, headless) and `lungview models
list|show|use` (the versions, which one is active, rollback)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

MODEL_KEYS = ("id", "role", "path", "parent", "active", "verdict", "reason", "metrics", "created")


def add_commands(sub, parser_class) -> None:
    tr = sub.add_parser("train", help="fine-tune a model on the reviewed findings of a workspace, or on LUNA16")
    tr.add_argument("--workspace", metavar="DIR", help="a LungView workspace's reviews")
    tr.add_argument("--luna16", metavar="DIR", help="LUNA16's layout: subset0..9/*.mhd, annotations.csv, "
                                                   "candidates(_V2).csv, the book's annotations_with_malignancy.csv "
                                                   "(with --workspace too: both in one run)")
    tr.add_argument("--fold", type=int, metavar="K", help="LUNA16: subsetK validates (default: the book's split, "
                                                         "every tenth series)")
    tr.add_argument("--max-negatives", type=int, default=100, metavar="N",
                    help="LUNA16: at most N class-0 candidates per scan as negatives (a seeded draw; default 100)")
    tr.add_argument("--cache", metavar="DIR", help="LUNA16: the crop cache's folder (default: the user data folder's "
                                                  "cache/crops); built once, resumed where an earlier build stopped")
    tr.add_argument("--workers", type=int, default=0, metavar="N",
                    help="LUNA16: processes cutting the crop cache (default: one per CPU)")
    tr.add_argument("--resume", action="store_true", help="LUNA16: continue the same run (same source, role and "
                                                            "settings) from the end of its last finished epoch")
    tr.add_argument("--role", required=True, choices=("nodule", "malignancy", "segmentation"))
    tr.add_argument("--val-scans", nargs="+", metavar="UID", help="these scans for validation (never trained on)")
    tr.add_argument("--epochs", type=int, default=5)
    tr.add_argument("--lr", type=float, help="SGD learning rate (default the book's: nodule 0.001, malignancy 0.003)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--augmentation", choices=("parent", "book", "exact"), default="parent",
                    help="classifiers: the one the parent learned with (default; the book's for the book's "
                         "checkpoints, exact whole-voxel moves for the demo models), the book's, or exact")
    tr.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    tr.add_argument("--nproc", type=int, metavar="N", help="train in N processes on this machine (torchrun: one per "
                                                          "GPU, or CPU processes with gloo); the global batch is "
                                                          "split between them")
    tr.add_argument("--tensorboard", metavar="DIR", help="also log each epoch's loss and validation metrics for "
                                                         "TensorBoard there (pip install 'lungview[tensorboard]')")
    tr.add_argument("--json", action="store_true", help="print one JSON object")
    tr.set_defaults(func=cmd_train)

    mo = sub.add_parser("models", help="the model versions: list, show one, make one active (rollback)")
    verbs = mo.add_subparsers(dest="verb", parser_class=parser_class, required=True)
    ls = verbs.add_parser("list", help="every version, which is active, its verdict and metrics")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    sh = verbs.add_parser("show", help="one version with its model card")
    sh.add_argument("id")
    sh.set_defaults(func=cmd_show)
    us = verbs.add_parser("use", help="make a version the active one of its role (any earlier one, "
                                      "book-ROLE or demo-ROLE: a rollback)")
    us.add_argument("id")
    us.set_defaults(func=cmd_use)
    ex = verbs.add_parser("export", help="write a model as TorchScript, ONNX or OpenVINO IR (its card inside), "
                                         "checked against the original on the same input")
    ex.add_argument("id", metavar="ID|PATH", help="a version id (`lungview models list`) or a checkpoint file")
    ex.add_argument("--format", required=True, choices=("torchscript", "onnx", "openvino"))
    ex.add_argument("--out", required=True, metavar="PATH", help="the file to write (OpenVINO: PATH.xml and PATH.bin)")
    ex.add_argument("--role", choices=("segmentation", "nodule", "malignancy"),
                    help="for a checkpoint file: its role (default: the file's own; a book classifier is nodule)")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_export)
    for p in (tr, ls, sh, us, ex):
        p.add_argument("--debug", action="store_true", help="show tracebacks")


def _metrics_line(m: dict) -> str:
    if not m:
        return "-"
    if "auc" in m:
        return "AUC -" if m["auc"] is None else f"AUC {m['auc']:.3f}"
    if "dice" in m:
        return "Dice -" if m["dice"] is None else f"Dice {m['dice']:.3f} ({m['crops']} crops)"
    at = f"at p ≥ {m['threshold']:.2f}: " if "threshold" in m else ""
    return (f"{at}sensitivity {m['sensitivity']:.2f} ({m['true_positives']}/{m['nodules']}), "
            f"{m['fp_per_scan']:.2f} FP/scan, CPM {m['cpm']:.3f}")


def cmd_train(args) -> int:
    from tqdm import tqdm

    from lungview.core import LungViewError
    from lungview.inference.device import resolve_device
    from lungview.review.workspace import Workspace
    from lungview.training import distributed
    from lungview.training.finetune import Settings
    from lungview.training.runs import train_from_luna16, train_from_workspace

    if args.epochs < 1:
        raise LungViewError(f"--epochs must be at least 1, not {args.epochs}")
    if args.workspace and (args.nproc is not None or distributed.launched()):
        raise LungViewError("a workspace trains in one process (it is locked by the one that has it open): "
                            "run it without --nproc or torchrun")
    if args.nproc is not None:  # lungview train ... again, under torchrun
        return distributed.launch(args.nproc, args.argv)
    device = distributed.init_from_env(resolve_device(args.device))
    rank, size = distributed.rank_and_size()
    quiet = args.json or rank != 0  # process 0 alone reports
    bar = tqdm(total=1, desc=f"train {args.role}", file=sys.stderr, delay=1.0, disable=quiet)
    started = []

    def progress(done, total, message):
        if rank != 0:
            return
        if not started:  # the device named once the data is there and training begins
            started.append(True)
            bar.write(f"training on {device.name}" + (f", {size} processes" if size > 1 else ""), file=sys.stderr)
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    if not (args.workspace or args.luna16):
        raise LungViewError("say what to learn from: --workspace DIR, --luna16 DIR, or both")
    if args.val_scans and not args.workspace:
        raise LungViewError("--val-scans is for a workspace; LUNA16 validates by --fold or the book's split")
    if not args.luna16 and (args.fold is not None or args.cache or args.workers or args.resume):
        raise LungViewError("--fold, --cache, --workers and --resume are for --luna16")
    settings = Settings(epochs=args.epochs, lr=args.lr, seed=args.seed, augmentation=args.augmentation)
    log = _tensorboard(args.tensorboard, args.role) if args.tensorboard and rank == 0 else None
    if args.luna16:
        ws = Workspace(args.workspace) if args.workspace else None
        try:
            result, version = train_from_luna16(args.luna16, args.role, device, settings, args.fold,
                                                args.max_negatives, args.cache, args.workers, args.resume, progress,
                                                on_epoch=log, workspace=ws, validation=args.val_scans)
        finally:
            if ws is not None:
                ws.close()
    else:
        with Workspace(args.workspace) as ws:
            result, version = train_from_workspace(ws, args.role, device, settings, args.val_scans, progress,
                                                   on_epoch=log)
    bar.close()
    if log is not None:
        log.writer.close()
    distributed.finish()
    if rank != 0:
        return 0
    out = {"id": version.id, "role": version.role, "path": version.path, "parent": version.parent,
           "verdict": version.verdict, "reason": version.reason, "active": version.verdict == "accepted",
           "before": result.before, "after": result.after, "history": result.history, "counts": {
               k: result.counts[k] for k in ("train", "validation")}, "device": device.name,
           "seconds": round(result.seconds, 2), "working_threshold": result.working_threshold}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    c = result.counts
    print(f"{version.id} ({device.name}, {result.seconds:.1f} s)")
    print(f"  trained on {c['train']['scans']} scan(s): {c['train']['positives']} positive, "
          f"{c['train']['negatives']} negative; validated on {c['validation']['scans']} scan(s): "
          f"{c['validation']['positives']} positive, {c['validation']['negatives']} negative")
    print(f"  before ({version.parent}): {_metrics_line(result.before)}")
    print(f"  after:  {_metrics_line(result.after)}")
    print(f"  {version.verdict}: {version.reason}" + ("" if version.verdict == "accepted" else
                                                        f" (kept; `lungview models use {version.id}` activates it)"))
    return 0


class _EpochLog:
    """Each epoch's record as TensorBoard scalars, as the book's training logs them: the training
    loss and every validation metric, one step per epoch."""

    def __init__(self, writer, role: str):
        self.writer, self.role = writer, role

    def __call__(self, record: dict) -> None:
        step = record["epoch"]
        self.writer.add_scalar(f"{self.role}/loss/trn", record["loss"], step)
        for key, value in (record.get("validation") or {}).items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{self.role}/{key}/val", value, step)
        self.writer.flush()


def _tensorboard(folder: str, role: str) -> _EpochLog:
    from lungview.core import LungViewError

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LungViewError("--tensorboard needs the tensorboard package: pip install 'lungview[tensorboard]'") from None
    from lungview.models.checkpoint import utc_timestamp

    run = f"{utc_timestamp().replace(':', '').replace('-', '')}-{role}"
    return _EpochLog(SummaryWriter(log_dir=str(Path(folder) / run)), role)


def _entry(v, active: bool) -> dict:
    d = v.to_dict(active)
    return {k: d[k] for k in MODEL_KEYS}


def cmd_list(args) -> int:
    from lungview.models.versions import list_versions

    rows = [_entry(v, on) for v, on in list_versions()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "*" if r["active"] else " "
        after = _metrics_line(r["metrics"].get("after", {})) if r["metrics"] else ""
        print(f"{mark} {r['id']:34} {r['role']:12} {r['verdict']:8} {after}")
    return 0


def cmd_show(args) -> int:
    from lungview.models.checkpoint import load_checkpoint
    from lungview.models.versions import get_version, list_versions

    found = [(v, on) for v, on in list_versions() if v.id == args.id]
    if not found:
        get_version(args.id)  # the registry's own error for an unknown id
    v, active = found[0]
    card = load_checkpoint(v.path, v.role).card
    print(json.dumps({**_entry(v, active), "card": dataclasses.asdict(card)}, indent=2))
    return 0


def cmd_use(args) -> int:
    from lungview.models.versions import use

    v = use(args.id)
    print(f"{v.id} is now the active {v.role} model ({v.path})")
    return 0


def cmd_export(args) -> int:
    from lungview.models.checkpoint import load_checkpoint
    from lungview.models.export import export
    from lungview.models.versions import get_version

    if Path(args.id).is_file():
        model = load_checkpoint(args.id, args.role)
    else:
        v = get_version(args.id)
        model = load_checkpoint(v.path, v.role)
    report = export(model, args.format, args.out)
    if args.json:
        print(json.dumps({"path": str(report.path), "format": report.format, "role": model.card.role,
                          "source": model.path, "source_sha256": model.sha256,
                          "max_abs_diff": report.max_abs_diff, "checked_with": report.checked_with}, indent=2))
    else:
        print(f"{report.path}: {model.card.role} model {model.card.name} as {report.format}, its card inside; "
              f"checked with {report.checked_with} against the original on a seeded input: largest difference "
              f"{report.max_abs_diff:.2g}")
    return 0
