"""Every scan in a folder, for the workspace: DICOM series from their headers (no pixel read),
volume files (.mhd, .nii, .nrrd, ...) opened one by one (a file without a UID is known by its
content). Each comes with what `open_volume` needs to open it again."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungview.core import LungViewError
from lungview.core.jobs import Cancelled, check_cancel
from lungview.io.dicom_scan import list_files, scan_files
from lungview.io.itk import ITK_SUFFIXES


@dataclass(frozen=True)
class FoundScan:
    series_uid: str
    path: str  # open_volume(path, series=series_uid) opens it
    series_description: str
    shape: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    modality: str = "CT"


def _dicom_spacing(headers) -> tuple[float, float, float]:
    h = headers[0]
    sr, sc = h.pixel_spacing or (1.0, 1.0)
    dz = h.slice_thickness or 1.0
    if h.orientation is not None and all(x.position is not None for x in headers) and len(headers) > 1:
        normal = np.cross(h.orientation[:3], h.orientation[3:])
        z = np.sort([float(np.dot(x.position, normal)) for x in headers])
        steps = np.diff(z)
        if (steps > 0).any():
            dz = float(np.median(steps[steps > 0]))
    return float(sc), float(sr), dz


def find_scans(folder: str | os.PathLike, progress=None, cancel=None) -> tuple[list[FoundScan], list[str]]:
    """(the CT scans below `folder`, one line per file or series that could not be used)."""
    from lungview.io.open import open_volume

    folder = Path(folder)
    if not folder.is_dir():
        raise LungViewError(f"{folder}: not a folder")
    try:
        files = list_files(folder)
    except OSError as exc:
        raise LungViewError(f"{folder}: cannot list folder ({exc.strerror})") from None
    volumes = [f for f in files if f.lower().endswith(ITK_SUFFIXES) and not f.lower().endswith(".raw")]
    volume_set = set(volumes)
    report = scan_files([f for f in files if f not in volume_set], progress, cancel)
    found, skipped = [], []
    for s in report.series:
        if s.modality not in ("CT", "") or all(h.is_localizer for h in s.headers):
            skipped.append(f"{s.display_uid}: {s.modality or 'no modality'} "
                           f"{'localizer' if s.modality == 'CT' else 'series'}, not a CT scan")
            continue
        if not s.uid:
            skipped.append(f"{s.display_uid}: open it on its own (Ctrl+Shift+O)")
            continue
        h = s.headers[0]
        where = os.path.commonpath([x.path for x in s.headers])
        where = where if os.path.isdir(where) else os.path.dirname(where)
        found.append(FoundScan(s.uid, where, s.description, (len(s.headers), h.rows, h.cols),
                               _dicom_spacing(s.headers), s.modality or "CT"))
    for k, path in enumerate(volumes):
        check_cancel(cancel)
        if progress is not None:
            progress(k, len(volumes), f"reading {Path(path).name}")
        try:
            vol = open_volume(path, cancel=cancel)
        except Cancelled:
            raise
        except LungViewError as exc:
            skipped.append(str(exc))
            continue
        found.append(FoundScan(vol.series_uid, path, vol.series_description, tuple(vol.shape),
                               tuple(vol.spacing_xyz), vol.modality))
    return found, skipped
