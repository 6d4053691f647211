"""The `lungview` command: `lungview info PATH` and friends (headless), `lungview [PATH]` (viewer)."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from contextlib import contextmanager

from lungview import __version__
from lungview.core import CtVolume, LungViewError

SUBCOMMANDS = ("info", "detect", "evaluate", "annotations", "train", "models")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one `lungview: error: ...` line, like every other error."""

    def error(self, message):  # noqa: D401
        self.exit(2, f"lungview: error: {message}\n")


@contextmanager
def cli_progress(label: str):
    """A tqdm bar on stderr that appears only for work taking over a second."""
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int, message: str = "") -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit="step", delay=1.0, file=sys.stderr,
                       leave=False)
            bar.desc_message = ""
        if total != bar.total or message != bar.desc_message:
            # a new phase: restart the count without printing (tqdm's reset would print)
            bar.total, bar.n, bar.last_print_n = total, 0, 0
            bar.desc_message = message
            bar.set_postfix_str(message, refresh=False)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def volume_info(vol: CtVolume) -> dict:
    lo, hi = vol.hu_range()
    return {
        "path": vol.source,
        "shape": list(vol.shape),
        "spacing": list(vol.spacing_xyz),
        "origin": list(vol.origin_xyz),
        "direction": [float(x) for x in vol.direction.ravel()],
        "orientation": vol.orientation(),
        "hu_min": lo,
        "hu_max": hi,
        "modality": vol.modality,
        "series_uid": vol.series_uid,
        "study_uid": vol.study_uid,
        "slice_thickness_mm": vol.slice_thickness_mm,
        "files": vol.files,
        "other_series": [
            {"series_uid": s.series_uid, "modality": s.modality, "files": s.files,
             "description": s.description} for s in vol.other_series
        ],
        "warnings": list(vol.warnings),
        "interpolated_slices": list(vol.interpolated_slices),
    }


def _format_info(info: dict) -> str:
    def fmt(values, digits=3):
        return " x ".join(f"{v:.{digits}f}" for v in values)

    d = info["direction"]
    lines = [
        f"path         {info['path']}",
        f"shape        {' x '.join(map(str, info['shape']))} (index, row, col)",
        f"spacing      {fmt(info['spacing'])} mm (x, y, z)",
        f"origin       {fmt(info['origin'], 2)} mm (x, y, z)",
        f"direction    [{', '.join(f'{v:g}' for v in d[:3])}; {', '.join(f'{v:g}' for v in d[3:6])}; "
        f"{', '.join(f'{v:g}' for v in d[6:])}] ({info['orientation']})",
        f"HU range     {info['hu_min']} .. {info['hu_max']}",
        f"modality     {info['modality']}",
        f"series UID   {info['series_uid'] or '-'}",
        f"files        {info['files']}",
    ]
    if info["slice_thickness_mm"]:
        lines.append(f"thickness    {info['slice_thickness_mm']:.2f} mm")
    for s in info["other_series"]:
        lines.append(f"other series {s['series_uid']} ({s['modality']}, {s['files']} files"
                     f"{', ' + s['description'] if s['description'] else ''})")
    for w in info["warnings"]:
        lines.append(f"warning      {w}")
    return "\n".join(lines)


def _cmd_info(args) -> int:
    from lungview.io import open_volume

    with cli_progress("opening") as progress:
        vol = open_volume(args.path, series=args.series, progress=progress, allow_gaps=args.allow_gaps)
    info = volume_info(vol)
    print(json.dumps(info, indent=2) if args.json else _format_info(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lungview", description="Chest CT viewer and lung-nodule pipeline.")
    parser.add_argument("--version", action="version", version=f"lungview {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    info = sub.add_parser("info", help="describe a scan: shape, spacing, geometry, warnings")
    info.add_argument("path", help="DICOM folder or file, .mhd/.mha, .nii/.nii.gz, .nrrd/.nhdr")
    info.add_argument("--series", help="SeriesInstanceUID (or unique prefix) when a folder holds several")
    info.add_argument("--allow-gaps", action="store_true",
                      help="fill runs of more than two missing slices by interpolation instead of refusing")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--debug", action="store_true", help="show tracebacks")
    info.set_defaults(func=_cmd_info)
    from lungview import cli_detect, cli_review, cli_train

    cli_detect.add_commands(sub, _Parser)
    cli_review.add_commands(sub, _Parser)
    cli_train.add_commands(sub, _Parser)
    return parser


def viewer_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lungview", description="Chest CT viewer and lung-nodule pipeline. "
                f"Commands: {', '.join(SUBCOMMANDS)} (lungview COMMAND --help).")
    p.add_argument("path", nargs="?", help="scan to open: DICOM folder or file, .mhd/.mha, .nii/.nii.gz, .nrrd")
    p.add_argument("--demo", action="store_true", help="a synthetic phantom with the shipped demo models")
    p.add_argument("--series", help="SeriesInstanceUID when a folder holds several")
    p.add_argument("--allow-gaps", action="store_true",
                   help="fill runs of more than two missing slices by interpolation instead of refusing")
    p.add_argument("--seg-model")
    p.add_argument("--cls-model")
    p.add_argument("--mal-model")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"),
                   help="what runs the networks on the CPU (default: the one saved in Detect → Models…, else auto: "
                        "OpenVINO when installed)")
    p.add_argument("--screenshot", metavar="FILE", help="save a PNG of the window once detection is done, exit "
                   "(runs without a workspace unless --workspace is given)")
    p.add_argument("--workspace", metavar="DIR", help="where reviews, detections and masks are kept "
                   "(default: the user data directory's lungview/workspace)")
    p.add_argument("--no-workspace", action="store_true", help="keep nothing: edits are lost when the window closes")
    return p


def _viewer(argv) -> int:
    try:
        args = viewer_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.path and not Path(args.path).exists():
        sys.stderr.write(f"lungview: error: {args.path}: no such file or folder\n")
        return 2
    from lungview.gui.app import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version"):
        return _viewer(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    args.argv = argv  # (lungview train --nproc starts the same command again under torchrun)
    try:
        return args.func(args)
    except LungViewError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        sys.stderr.write(f"lungview: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("lungview: interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - never a bare traceback for the user
        if getattr(args, "debug", False):
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        sys.stderr.write(f"lungview: error: unexpected {type(exc).__name__}: {first} "
                         "(run with --debug for details)\n")
        return 2
