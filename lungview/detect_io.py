"""Detection results on disk: the JSON of `lungview detect --json` and a LUNA16-style CSV
(seriesuid, coordX, coordY, coordZ, probability, then LungView's fields), and reading them back."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from lungview.core import LungViewError
from lungview.core.atomic import write_text_atomic
from lungview.inference.evaluate import ScoredDetection

def scan_record(path, vol, result, device, models, demo: bool = False) -> dict:
    """One scan's entry of `lungview detect --json`, with every detection (callers keep those above
    their threshold); what the workspace stores as the scan's detections. `device`: the DeviceInfo;
    `demo`: demo models ran (a note when the scan is not a phantom)."""
    from lungview.synthetic.phantom import is_phantom_uid

    notes = list(result.notes)
    reason = vol.not_ct_reason()
    if reason:
        notes.insert(0, f"this volume does not look like CT: {reason}; the findings are not meaningful")
    if demo and not is_phantom_uid(vol.series_uid):
        notes.append("demo models (trained on synthetic phantoms) ran on a real scan: the results are "
                     "not meaningful; run scripts/fetch_book_models.py for the LUNA16-trained models")
    return {"path": str(path), "series_uid": vol.series_uid, "device": device.name + (" bf16" if device.bf16 else ""),
            "backend": result.backend, "models": models, "working_threshold": result.working_threshold,
            "candidates": result.candidates,
            "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()}, "notes": notes,
            "detections": [d.to_dict() for d in result.detections]}


CSV_EXTRA = ("p_malignant", "malignancy_source", "diameter_mm", "volume_mm3", "long_axis_mm", "short_axis_mm",
             "mean_diameter_mm", "size_category", "size_source", "index", "row", "col", "notes")


def scans_to_csv(scans: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "probability", *CSV_EXTRA])
    for scan in scans:
        for d in scan["detections"]:
            x, y, z = d["center_xyz"]
            i, r, c = d["center_irc"]
            p_mal = "" if d["p_malignant"] is None else d["p_malignant"]
            w.writerow([scan["series_uid"], x, y, z, d["p_nodule"], p_mal, d["malignancy_source"],
                        d["diameter_mm"], d["volume_mm3"], d["long_axis_mm"], d["short_axis_mm"],
                        d["mean_diameter_mm"], d["size_category"], d["size_source"], i, r, c,
                        "; ".join(d["notes"])])
    return buf.getvalue()


def write_results(path: str | os.PathLike, scans: list[dict]) -> None:
    """.csv or .json by the suffix, written atomically."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        write_text_atomic(path, scans_to_csv(scans))
    elif path.suffix.lower() == ".json":
        write_text_atomic(path, json.dumps({"scans": scans}, indent=2) + "\n")
    else:
        raise LungViewError(f"{path}: --out must end in .csv or .json")


def _optional(value) -> float | None:
    return None if value in (None, "") else float(value)


def read_detections(path: str | os.PathLike) -> tuple[list[ScoredDetection], list[str]]:
    """Detections and the scans they cover, in file order (a JSON lists scans without
    detections too; a CSV cannot)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LungViewError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise LungViewError(f"{path}: not a text file") from None
    if path.suffix.lower() == ".json":
        try:
            scans = json.loads(text)["scans"]
            dets = [ScoredDetection(s["series_uid"] or s["path"], tuple(d["center_xyz"]), float(d["p_nodule"]),
                                    _optional(d.get("p_malignant"))) for s in scans for d in s["detections"]]
            return dets, list(dict.fromkeys(s["series_uid"] or s["path"] for s in scans))
        except (ValueError, KeyError, TypeError) as exc:
            raise LungViewError(f"{path}: not a lungview detect JSON ({type(exc).__name__}: {exc})") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    need = ("seriesuid", "coordX", "coordY", "coordZ", "probability")
    if rows and any(k not in rows[0] for k in need):
        raise LungViewError(f"{path}: CSV needs the columns {', '.join(need)}")
    try:
        dets = [ScoredDetection(r["seriesuid"], (float(r["coordX"]), float(r["coordY"]), float(r["coordZ"])),
                                float(r["probability"]), _optional(r.get("p_malignant"))) for r in rows]
    except ValueError as exc:
        raise LungViewError(f"{path}: non-numeric value ({exc})") from None
    return dets, list(dict.fromkeys(d.scan for d in dets))
