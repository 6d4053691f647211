"""A workspace's findings in and out of the formats other tools read: LUNA16's annotations.csv,
the book's candidates.csv, 3D Slicer's .mrk.json and LungView's own full CSV (DICOM SEG and SR:
review.dicom_export).

Imports arrive as findings of source "imported from FILE", matched to the workspace's scans by
series UID (a .mrk.json has none: it goes to the one scan named); the same file imported twice
adds nothing the second time. Each import is one undoable step of the scan's review.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lungview.core import LungViewError
from lungview.core.atomic import write_text_atomic
from lungview.core.shape import sphere_volume
from lungview.io.annotations import Annotation, csv_columns, read_annotations, write_annotations, write_candidates
from lungview.io.markups import Markup, read_markups, write_markups
from lungview.review.model import Finding, check, new_id, sphere
from lungview.review.workspace import Workspace

FORMATS = ("luna16", "candidates", "mrk", "seg", "sr", "csv")
STATUS_COLORS = {"confirmed": (0.2, 0.85, 0.3), "rejected": (0.6, 0.6, 0.6), "unsure": (1.0, 0.75, 0.1),
                 "unreviewed": (0.3, 0.7, 1.0)}
CSV_COLUMNS = ("seriesuid", "id", "source", "status", "type", "malignancy", "rating", "lung_rads", "coordX",
               "coordY", "coordZ", "diameter_mm", "long_axis_mm", "short_axis_mm", "mean_diameter_mm",
               "volume_mm3", "solid_mm", "p_nodule", "p_malignant", "note")
SAME_POINT_MM = 0.5  # an imported row this close to one already imported from the same file is that one


@dataclass
class ImportReport:
    path: str
    added: dict[str, int] = field(default_factory=dict)  # series UID -> findings added
    known: int = 0  # rows already imported before
    unknown_scans: dict[str, int] = field(default_factory=dict)  # series UID -> rows skipped
    left_out: dict[str, int] = field(default_factory=dict)  # LIDC: small nodules, non-nodules

    def summary(self) -> str:
        added = sum(self.added.values())
        text = f"{self.path}: {added} finding(s) added to {len([n for n in self.added.values() if n])} scan(s)"
        if self.known:
            text += f", {self.known} already imported"
        if self.unknown_scans:
            rows = sum(self.unknown_scans.values())
            text += (f"; {rows} row(s) of {len(self.unknown_scans)} other scan(s) skipped "
                     "(add a scan with --scan PATH)")
        if self.left_out:
            text += (f"; not imported: {self.left_out['small']} reader mark(s) of nodules under 3 mm and "
                     f"{self.left_out['non_nodules']} non-nodule(s)")
        return text


def _source(path) -> str:
    return f"imported from {Path(path).name}"


def _from_annotation(a: Annotation, source: str, status: str) -> Finding:
    return sphere(a.center_xyz, a.diameter_mm, source=source, status=status)


def _from_markup(m: Markup, source: str) -> Finding:
    """A point (size unknown) or an ROI (its box's axes); LungView's own labels, written in the
    description as "key value; ...", come back as they were."""
    if m.size_mm is None:
        long = short = d = 0.0
    else:
        long, short, d = max(m.size_mm[:2]), min(m.size_mm[:2]), float(sum(m.size_mm) / 3.0)
    labels = dict(part.strip().split(" ", 1) for part in m.description.split(";") if " " in part.strip())
    kept = {k: labels[k] for k in ("status", "type", "malignancy", "note") if k in labels}
    if labels.get("rating", "").isdigit():
        kept["rating"] = int(labels["rating"])
    if m.size_mm is None and labels.get("diameter", "").endswith(" mm"):
        long = short = d = float(labels["diameter"][:-3])
    if "status" not in labels:  # not LungView's own description: Slicer's label is the note
        kept.setdefault("note", m.label)
    f = Finding(id=new_id(), source=source, center_xyz=m.center_xyz, diameter_mm=d, long_axis_mm=long,
                short_axis_mm=short, volume_mm3=sphere_volume(d))
    try:
        return check(replace(f, **kept))
    except ValueError:  # someone else's description: the point, with its label as the note
        return replace(f, note=m.label)


def read_findings(path: str | os.PathLike) -> dict[str | None, list[Finding]]:
    """The findings a file holds, by series UID (None: a file without one, a .mrk.json)."""
    path = Path(path)
    name = path.name.lower()
    source = _source(path)
    if name.endswith(".mrk.json") or name.endswith(".json"):
        return {None: [_from_markup(m, source) for m in read_markups(path)]}
    if name.endswith(".xml"):
        raise LungViewError(f"{path}: a LIDC-IDRI read needs its scan (import_file opens it)")
    if not name.endswith(".csv"):
        raise LungViewError(f"{path}: unknown annotation format (LUNA16 or candidates .csv, .mrk.json, LIDC .xml)")
    columns = csv_columns(path)
    rows = read_annotations(path)
    by_scan: dict[str | None, list[Finding]] = {}
    if "class" in columns and "diameter_mm" not in columns:  # the book's candidates.csv
        for a in rows:
            try:
                label = int(float(a.extra["class"]))
            except (TypeError, ValueError):
                raise LungViewError(f"{path}: class {a.extra['class']!r} is not 0 or 1") from None
            by_scan.setdefault(a.series_uid, []).append(
                _from_annotation(a, source, "confirmed" if label == 1 else "rejected"))
    elif "diameter_mm" in columns:  # LUNA16's annotations.csv: nodules
        for a in rows:
            by_scan.setdefault(a.series_uid, []).append(_from_annotation(a, source, "confirmed"))
    else:
        raise LungViewError(f"{path}: neither LUNA16 annotations (diameter_mm) nor candidates (class)")
    return by_scan


def _lidc_type(chars: dict) -> str:
    """LIDC's ratings: calcification 1-5 a pattern of calcium (6 absent); texture 1 non-solid
    (ground glass), 2-4 part solid, 5 solid."""
    if chars.get("calcification", 6) < 6:
        return "calcified"
    texture = chars.get("texture", 5)
    return "ground-glass" if texture < 2 else "part-solid" if texture < 4.5 else "solid"


def lidc_findings(path, vol, read=None) -> tuple[list[Finding], dict[str, int], dict]:
    """The readers' consensus as findings: nodules marked by 3 or more of the readers confirmed,
    the others (1-2 readers) unsure with a note saying how many; malignancy from the median
    rating. Also what was left out (points under 3 mm, non-nodules), and each finding's readers'
    masks ({finding id: ((reader, box, mask), ...)}). `read`: the file already parsed
    (io.lidc.read_lidc)."""
    from lungview.io.lidc import consensus, read_lidc

    read = read if read is not None else read_lidc(path)
    if read.series_uid and vol.series_uid and read.series_uid != vol.series_uid:
        raise LungViewError(f"{path}: reads series {read.series_uid}, not the scan's {vol.series_uid}")
    nodules, left = consensus(read, vol)
    source = _source(path)
    out, masks = [], {}
    for c in nodules:
        rating = int(math.floor(float(np.median(c.ratings)) + 0.5)) if c.ratings else None
        d = c.diameter_mm
        out.append(Finding(
            id=new_id(), source=source, center_xyz=c.center_xyz, diameter_mm=d, long_axis_mm=c.long_axis_mm,
            short_axis_mm=c.short_axis_mm, volume_mm3=sphere_volume(d), type=_lidc_type(c.characteristics),
            status="confirmed" if c.accepted else "unsure", malignancy=c.malignancy, rating=rating,
            note=f"marked by {len(c.readers)} of {len(read.readers)} LIDC readers"))
        if c.masks:
            masks[out[-1].id] = c.masks
    return out, left, masks


def lidc_masks(masks, by_finding: dict):
    """Puts the LIDC readers' masks into `masks` (a Masks): each reader's as it was drawn, and as
    the finding's own mask the voxels at least half of its readers drew (LIDC's 50 % consensus).
    Returns the change to the label volume (already applied)."""
    from lungview.review.masks import MaskChange

    changes = []
    for fid, readers in by_finding.items():
        lo = np.min([[s.start for s in box] for _, box, _ in readers], axis=0)
        hi = np.max([[s.stop for s in box] for _, box, _ in readers], axis=0)
        votes = np.zeros(hi - lo, dtype=np.int16)
        for reader, box, m in readers:
            votes[tuple(slice(s.start - a, s.stop - a) for s, a in zip(box, lo))] += m
            masks.readers.setdefault(fid, {})[reader] = (box, m)
        agreed = votes * 2 >= len(readers)
        if agreed.any():
            changes.append(masks.replace(fid, tuple(slice(a, b) for a, b in zip(lo, hi)), agreed))
    return MaskChange.join(changes)


def import_file(ws: Workspace, path: str | os.PathLike, scan_uid: str | None = None, vol=None) -> ImportReport:
    """`vol`: the scan already open (a LIDC read needs its geometry; otherwise it is opened
    from where the workspace says it is)."""
    report = ImportReport(str(path))
    if str(path).lower().endswith(".xml"):
        from lungview.io.lidc import read_lidc

        read = read_lidc(path)
        uid = read.series_uid or scan_uid
        if vol is None or (uid and vol.series_uid != uid):
            if not uid or not ws.has(uid):
                raise LungViewError(f"{path}: its series {uid or '(none)'} is not in the workspace; add it with --scan")
            from lungview.io import open_volume

            vol = open_volume(ws.entry(uid).path, series=uid)
        findings, left, reader_masks = lidc_findings(path, vol, read)
        found = {vol.series_uid: findings}
        report.left_out = left
    else:
        found, reader_masks = read_findings(path), {}
    for uid, findings in found.items():
        target = uid if uid is not None else scan_uid
        if target is None:
            scans = ws.scans()
            if len(scans) != 1:
                raise LungViewError(f"{path}: names no scan; choose one with --scan")
            target = scans[0].series_uid
        if not ws.has(target):
            report.unknown_scans[target] = len(findings)
            continue
        review = ws.load_review(target)
        if reader_masks:
            review.masks = ws.load_masks(target, vol)
        report.added[target] = _add_new(review, findings, path, report, reader_masks)
        ws.save_review(target, review)
        if reader_masks:
            ws.save_masks(target, review.masks)
    return report


def _add_new(review, findings: list[Finding], path, report: ImportReport, reader_masks=None) -> int:
    """Adds, as one undoable step, the findings not already imported from the same file (with
    their LIDC readers' masks, when the review has masks to hold them)."""
    fresh = []
    for f in findings:
        if any(g.source == f.source and math.dist(g.center_xyz, f.center_xyz) < SAME_POINT_MM for g in review.findings):
            report.known += 1
        else:
            fresh.append(f)
    mask = None
    if reader_masks and review.masks is not None:
        mask = lidc_masks(review.masks, {f.id: reader_masks[f.id] for f in fresh if f.id in reader_masks})
    return review.add_many(fresh, f"Import {Path(path).name}", mask)


def import_into(review, path: str | os.PathLike, vol) -> ImportReport:
    """The viewer's File → Import: the file's findings of the scan shown (`vol`), into its review
    (one undoable step; the workspace's autosave keeps it)."""
    report = ImportReport(str(path))
    reader_masks = {}
    if str(path).lower().endswith(".xml"):
        mine, report.left_out, reader_masks = lidc_findings(path, vol)
    else:
        found = read_findings(path)
        mine = found.get(vol.series_uid, []) + found.get(None, [])
        report.unknown_scans = {u: len(f) for u, f in found.items() if u not in (None, vol.series_uid)}
    report.added[vol.series_uid] = _add_new(review, mine, path, report, reader_masks)
    return report


def _selected(ws: Workspace, scan_uid: str | None) -> list[str]:
    if scan_uid is not None:
        ws.entry(scan_uid)  # a clear error for an unknown one
        return [scan_uid]
    return [e.series_uid for e in ws.scans()]


def export(ws: Workspace, fmt: str, out: str | os.PathLike, scan_uid: str | None = None, mask_of_scan=None,
           vol=None) -> int:
    """Writes the findings of the workspace (or of one scan) to `out`; how many were written.
    `mask_of_scan`, `vol`: for SEG and SR, how a nodule's mask is had and the scan if already
    open (see review.dicom_export)."""
    if fmt not in FORMATS:
        raise LungViewError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    uids = _selected(ws, scan_uid)
    reviews = {uid: ws.load_review(uid) for uid in uids}
    out = Path(out)
    if out.is_dir():
        raise LungViewError(f"{out}: is a folder; name the file to write")
    if fmt in ("seg", "sr"):
        from lungview.review.dicom_export import export_dicom

        return export_dicom(ws, fmt, out, reviews, mask_of_scan, vol)
    try:
        if fmt == "luna16":
            rows = [Annotation(uid, f.center_xyz, round(f.diameter_mm, 3)) for uid, r in reviews.items()
                    for f in r.findings if f.status == "confirmed"]
            write_annotations(out, rows)
            return len(rows)
        if fmt == "candidates":
            rows = [(uid, f.center_xyz, 1 if f.status == "confirmed" else 0) for uid, r in reviews.items()
                    for f in r.findings if f.status in ("confirmed", "rejected")]
            write_candidates(out, rows)
            return len(rows)
        if fmt == "mrk":
            with_findings = [uid for uid, r in reviews.items() if len(r)]
            if len(with_findings) > 1:
                raise LungViewError("a .mrk.json holds the points of one scan: choose it with --scan")
            marks = [_markup(n, f) for uid in with_findings for n, f in enumerate(reviews[uid].findings, 1)]
            write_markups(out, marks)
            return len(marks)
        write_text_atomic(out, _full_csv(reviews))
        return sum(len(r) for r in reviews.values())
    except OSError as exc:
        raise LungViewError(f"{out}: cannot write ({exc.strerror})") from None


def _markup(n: int, f: Finding) -> Markup:
    rads = f" {f.lung_rads}" if f.lung_rads else ""
    label = f"N{n} {f.status}{rads}"
    description = (f"id {f.id}; source {f.source}; status {f.status}; type {f.type}; malignancy {f.malignancy}"
                   + (f"; rating {f.rating}" if f.rating else "") + (f"; Lung-RADS {f.lung_rads}" if f.lung_rads else "")
                   + (f"; diameter {f.diameter_mm:.1f} mm" if f.diameter_mm > 0 else "")
                   + (f"; p_nodule {f.p_nodule:.3f}" if f.p_nodule is not None else "")
                   + (f"; note {f.note}" if f.note else ""))
    return Markup(f.center_xyz, label, description, name=label, id=f.id,
                  size_mm=(f.diameter_mm,) * 3 if f.diameter_mm > 0 else None, color=STATUS_COLORS[f.status])


def _full_csv(reviews) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def num(v, digits=3):
        return "" if v is None else f"{v:.{digits}f}"

    for uid, r in reviews.items():
        for f in r.findings:
            w.writerow([uid, f.id, f.source, f.status, f.type, f.malignancy, f.rating or "", f.lung_rads or "",
                        *(f"{c:.4f}" for c in f.center_xyz), num(f.diameter_mm), num(f.long_axis_mm),
                        num(f.short_axis_mm), num(f.mean_diameter_mm, 1), num(f.volume_mm3, 1), num(f.solid_mm),
                        num(f.p_nodule, 4), num(f.p_malignant, 4), f.note])
    return buf.getvalue()
