"""open_volume: one entry point for every scan format LungView reads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from lungview.core import CtVolume, ScanError
from lungview.core.jobs import check_cancel
from lungview.io.dicom import choose_series, read_series
from lungview.io.dicom_scan import list_files, read_header, scan_files
from lungview.io.itk import ITK_SUFFIXES, read_itk
from lungview.io.orient import standardize_orientation

SUPPORTED_SUFFIXES = ITK_SUFFIXES + (".dcm", "(a DICOM folder)")


def _has_itk_suffix(path: Path) -> bool:
    return path.name.lower().endswith(ITK_SUFFIXES)


def open_volume(path: str | os.PathLike, series: str | None = None, progress=None,
                cancel=None, allow_gaps: bool = False) -> CtVolume:
    """Read a scan into a CtVolume in the standard axial layout.

    `path`: a folder (DICOM, searched recursively), one DICOM file (its whole series is read),
    or a .mhd/.mha/.nii/.nii.gz/.nrrd/.nhdr file. `series`: a SeriesInstanceUID (or unique
    prefix) when a folder holds several. `progress(done, total, message)` and `cancel`
    (a CancelToken: raises Cancelled when set) are optional. `allow_gaps`: fill runs of more
    than two missing DICOM slices by interpolation instead of refusing. Raises ScanError with a
    one-line message.
    """
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "no such file or folder")
    try:
        if path.is_dir():
            vol = _open_folder(path, series, progress, cancel, allow_gaps)
        elif _has_itk_suffix(path):
            vol = read_itk(path, progress, cancel)
        else:
            vol = _open_dicom_file(path, series, progress, cancel, allow_gaps)
    except ValueError as exc:  # a geometry the volume refuses (zero spacing, ...)
        raise ScanError(path, str(exc)) from None
    check_cancel(cancel)
    vol = standardize_orientation(vol)
    if not vol.series_uid:  # NIfTI, NRRD, DICOM without the tag: same file, same UID
        vol.series_uid = content_uid(vol)
    return vol


def content_uid(vol: CtVolume) -> str:
    """A stable DICOM-style UID (2.25.<128-bit number>) from the voxels and the geometry, so that
    detections of a file without a UID (NIfTI, NRRD) can be matched to annotations."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(vol.hu).data)
    # geometry to 0.1 um: formats that store float32 (NIfTI) give the same UID as the others
    geometry = (vol.shape, (np.round(vol.spacing_xyz, 4) + 0.0).tolist(), (np.round(vol.origin_xyz, 4) + 0.0).tolist(),
                (np.round(vol.direction, 5) + 0.0).tolist())  # + 0.0: no "-0.0"
    h.update(repr(geometry).encode())
    return f"2.25.{int.from_bytes(h.digest(), 'big')}"


def _open_folder(path: Path, series, progress, cancel, allow_gaps) -> CtVolume:
    try:
        files = list_files(path)
    except OSError as exc:
        raise ScanError(path, f"cannot list folder ({exc.strerror})") from None
    volumes = [f for f in files if _has_itk_suffix(Path(f)) and not f.lower().endswith(".raw")]
    dicom_candidates = [f for f in files if not _has_itk_suffix(Path(f))]
    report = scan_files(dicom_candidates, progress, cancel)
    if not report.series and len(volumes) == 1:
        return read_itk(Path(volumes[0]), progress, cancel)
    if not report.series and len(volumes) > 1:
        names = ", ".join(Path(v).name for v in volumes[:6])
        raise ScanError(path, f"no DICOM images, but several volume files; open one of: {names}")
    chosen = choose_series(report, path, series)
    return read_series(chosen, path, report, progress, cancel, allow_gaps)


def _open_dicom_file(path: Path, series, progress, cancel, allow_gaps) -> CtVolume:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ScanError(path, f"cannot read ({exc.strerror})") from None
    if size == 0:
        raise ScanError(path, "empty file (0 bytes)")
    header = read_header(str(path))
    if header is None:
        raise ScanError(path, "not a DICOM file, nor a supported volume "
                        "(.mhd .mha .nii .nii.gz .nrrd .nhdr)")
    if header == "no-pixels":
        raise ScanError(path, "DICOM object without image data (not a CT slice)")
    siblings = [f for f in list_files(path.parent) if os.path.dirname(f) == str(path.parent)]
    report = scan_files(siblings, progress, cancel)
    chosen = next((s for s in report.series if s.key == header.group_key), None)  # type: ignore[union-attr]
    if chosen is None:  # pragma: no cover - the file itself is in the folder
        raise ScanError(path, "could not find its series in the folder")
    if series is not None and chosen.uid and not chosen.uid.startswith(series):
        raise ScanError(path, f"file belongs to series {chosen.uid}, not {series}")
    return read_series(chosen, path, report, progress, cancel, allow_gaps)
