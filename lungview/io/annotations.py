"""LUNA16-style annotation CSV files (seriesuid, coordX, coordY, coordZ, diameter_mm, ...)."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field

from lungview.core import LungViewError
from lungview.core.atomic import write_text_atomic

LUNA_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "class")  # the book's candidates.csv


@dataclass(frozen=True)
class Annotation:
    series_uid: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float
    extra: dict = field(default_factory=dict, compare=False)


def read_annotations(path: str | os.PathLike) -> list[Annotation]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise LungViewError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LungViewError(f"{path}: not a CSV file ({exc})") from None
    out = []
    for n, row in enumerate(rows, start=2):
        missing = [c for c in LUNA_COLUMNS[:4] if c not in row]
        if missing:
            raise LungViewError(f"{path}: missing column(s) {', '.join(missing)}")
        try:
            xyz = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
            diameter = float(row.get("diameter_mm") or 0.0)
        except (TypeError, ValueError):
            raise LungViewError(f"{path}: line {n} has a non-numeric coordinate") from None
        extra = {k: v for k, v in row.items() if k not in LUNA_COLUMNS}
        out.append(Annotation(row["seriesuid"], xyz, diameter, extra))
    return out


def csv_columns(path: str | os.PathLike) -> list[str]:
    """The header line of a CSV file (to tell annotations from candidates)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])
    except OSError as exc:
        raise LungViewError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LungViewError(f"{path}: not a CSV file ({exc})") from None


def write_candidates(path: str | os.PathLike, rows: list[tuple[str, tuple[float, float, float], int]]) -> None:
    """The book's candidates.csv: (series UID, centre xyz, class 1 = nodule / 0 = not), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CANDIDATE_COLUMNS)
    for uid, xyz, cls in rows:
        writer.writerow([uid, *(f"{c:.4f}" for c in xyz), int(cls)])
    write_text_atomic(path, buf.getvalue())


def write_annotations(path: str | os.PathLike, annotations: list[Annotation]) -> None:
    """Written atomically; extra fields become extra columns after LUNA16's five."""
    extra_cols: list[str] = []
    for a in annotations:
        extra_cols += [k for k in a.extra if k not in extra_cols]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(LUNA_COLUMNS) + extra_cols)
    for a in annotations:
        writer.writerow([a.series_uid, *(f"{c:.4f}" for c in a.center_xyz), f"{a.diameter_mm:.3f}",
                         *(a.extra.get(k, "") for k in extra_cols)])
    write_text_atomic(path, buf.getvalue())


_HEADER_NAMES = {"seriesuid", "series_uid", "seriesinstanceuid", "series"}


def read_seriesuids(path: str | os.PathLike) -> list[str]:
    """LUNA16's seriesuids.csv: one series UID per line, first column, with or without a
    header line; blank lines skipped, order kept, duplicates dropped."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and r[0].strip()]
    except OSError as exc:
        raise LungViewError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LungViewError(f"{path}: not a CSV file ({exc})") from None
    uids = [r[0].strip() for r in rows]
    if uids and uids[0].lower() in _HEADER_NAMES:
        uids = uids[1:]
    if not uids:
        raise LungViewError(f"{path}: lists no series UIDs")
    return list(dict.fromkeys(uids))
