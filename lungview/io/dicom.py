"""A DICOM series -> CtVolume: pick the series, check and fix its geometry, decode to HU."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom

from lungview.core import CtVolume, ScanError, SeriesSummary
from lungview.core.jobs import check_cancel
from lungview.io.dicom_scan import DicomSeries, ScanReport, SliceHeader
from lungview.io.hu import HuConverter
from lungview.io.resample import deshear_slices, fill_missing, resample_slices

# Modalities whose pixels are not Hounsfield units.
_NON_CT = {"MR", "PT", "NM", "US", "XA", "RF", "CR", "DX", "MG", "OT", "SC", "RTDOSE", "SEG",
           "OP", "XC", "ES", "IO", "PX", "GM", "SM"}
_POSITION_TOL_MM = 0.01  # slices closer than this are duplicates
# Scanner jitter: positions rounded to 0.1 mm make gaps differ by up to 0.1 mm. Within this,
# slices are taken as they are (a uniform grid, no resampling, no blending).
JITTER_MM = 0.1
MAX_FILLED = 2  # missing slices in one gap that are filled (and marked); more: refused


class SliceGapError(ScanError):
    """Too many missing slices in a row to fill honestly; `--allow-gaps` fills them anyway."""


def summarize(series: DicomSeries) -> SeriesSummary:
    h = series.headers[0]
    return SeriesSummary(series_uid=series.display_uid, modality=series.modality,
                         files=len(series.headers), description=series.description,
                         shape=(len(series.headers), h.rows, h.cols), slice_thickness_mm=h.slice_thickness,
                         series_number=h.series_number)


def choose_series(report: ScanReport, where: Path, series: str | None) -> DicomSeries:
    if not report.series:
        detail = []
        if report.unreadable:
            detail.append(f"{len(report.unreadable)} file(s) that are not DICOM or are damaged")
        if report.without_pixels:
            detail.append(f"{len(report.without_pixels)} DICOM object(s) without an image")
        what = "; found " + " and ".join(detail) if detail else " (the folder is empty)"
        if where.is_file():
            raise ScanError(where, "not a readable DICOM image" if not report.without_pixels
                            else "DICOM object without image data (not a CT slice)")
        raise ScanError(where, f"no DICOM images found{what}")
    if series is None:
        return report.series[0]
    matches = [s for s in report.series if s.display_uid == series]
    if not matches:
        matches = [s for s in report.series if s.uid.startswith(series) and s.uid]
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(s.display_uid for s in report.series)
    problem = "is ambiguous" if matches else "is not here"
    raise ScanError(where, f"series {series!r} {problem}; series found: {listed}")


def _split_mixed(series: DicomSeries, notes: list[str]) -> list[SliceHeader]:
    """Drop localizers and files whose size or orientation differs from the bulk of the series."""
    headers = [h for h in series.headers if not h.is_localizer]
    if len(headers) < len(series.headers):
        notes.append(f"ignored {len(series.headers) - len(headers)} localizer image(s) in the series")
    if not headers:
        raise ScanError(Path(series.headers[0].path).parent, "the series holds only localizer images")
    groups: dict[tuple, list[SliceHeader]] = {}
    for h in headers:
        iop = None if h.orientation is None else tuple(np.round(h.orientation, 3))
        groups.setdefault((h.rows, h.cols, iop), []).append(h)
    if len(groups) > 1:
        keep = max(groups.values(), key=len)
        dropped = len(headers) - len(keep)
        sizes = sorted({f"{r}x{c}" for (r, c, _) in groups})
        notes.append(f"mixed image sizes or orientations in one series ({', '.join(sizes)}); "
                     f"kept the {len(keep)} matching slices and ignored {dropped}")
        headers = keep
    return headers


def _geometry(headers: list[SliceHeader], where: Path, notes: list[str]):
    """Sort slices along their normal; return sorted headers, positions along the normal,
    in-plane offsets (for tilt), direction matrix and in-plane spacing."""
    first = headers[0]
    if first.orientation is None or any(h.position is None for h in headers):
        raise ScanError(where, "slices lack ImagePositionPatient/ImageOrientationPatient; "
                        "cannot place them in space")
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 0.01 or abs(np.linalg.norm(col_dir) - 1) > 0.01 \
            or abs(np.dot(row_dir, col_dir)) > 0.01:
        raise ScanError(where, f"invalid ImageOrientationPatient {list(first.orientation)}")
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    pos = np.array([h.position for h in headers])
    along = pos @ normal
    inst = np.array([h.instance_number if h.instance_number is not None else 0 for h in headers])
    order = np.lexsort((inst, along))
    headers = [headers[i] for i in order]
    pos, along = pos[order], along[order]
    keep = np.concatenate([[True], np.diff(along) > _POSITION_TOL_MM])
    if not keep.all():
        notes.append(f"{int((~keep).sum())} slice(s) at duplicate positions ignored "
                     "(kept the first by instance number)")
        headers = [h for h, k in zip(headers, keep) if k]
        pos, along = pos[keep], along[keep]
    if len(headers) < 2:
        raise ScanError(where, "a single 2D image, not a volume (need at least 2 slices)")
    if first.pixel_spacing is None:
        raise ScanError(where, "slices lack PixelSpacing")
    if min(first.pixel_spacing) <= 0:
        raise ScanError(first.path, f"PixelSpacing {list(first.pixel_spacing)} is not positive")
    direction = np.column_stack([row_dir, col_dir, normal])
    offsets = (pos - pos[0]) - np.outer(along - along[0], normal)
    shift_cr = np.column_stack([offsets @ row_dir, offsets @ col_dir])
    return headers, along, shift_cr, direction, first.pixel_spacing


def read_stored_pixels(h: SliceHeader) -> np.ndarray:
    """The stored values of one slice: straight from the file when uncompressed, else decoded."""
    try:
        if h.raw_pixels is not None:
            offset, dtype, bits_stored = h.raw_pixels
            stored = np.fromfile(h.path, dtype=dtype, count=h.rows * h.cols, offset=offset)
            if stored.size != h.rows * h.cols:
                raise ScanError(h.path, "file is truncated: pixel data ends early")
            stored = stored.reshape(h.rows, h.cols)
            if bits_stored < 16:  # high bits may hold overlays: keep only the stored bits
                shift = 16 - bits_stored
                stored = (stored << shift) >> shift if dtype == "<i2" else stored & ((1 << bits_stored) - 1)
            return stored
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # dcmread first: it inflates deflated files, which pixel_array(path) cannot read.
            return pydicom.dcmread(h.path).pixel_array
    except ScanError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes one clear line
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise ScanError(h.path, f"cannot decode pixel data ({type(exc).__name__}: {detail})") from None


def _uniform_slices(hu, along, where: Path, notes: list[str], allow_gaps: bool):
    """Slices on a uniform grid. Positions within JITTER_MM of a uniform grid (fitted to all of
    them, with room for missing ones) are taken as they are: no resampling, no blending. A gap
    of up to MAX_FILLED missing slices is filled by interpolation, a wider one refused unless
    `allow_gaps`; irregular spacing is resampled. The slices that were not measured are
    returned, so that nobody mistakes them for data."""
    gaps = np.diff(along)
    index = np.concatenate([[0], np.cumsum(np.maximum(1, np.rint(gaps / np.median(gaps))))]).astype(int)
    step, start = np.polyfit(index, along, 1) if len(along) > 2 else (gaps[0], along[0])
    residual = float(np.abs(along - (start + step * index)).max())
    if residual > JITTER_MM:
        step = float(np.median(gaps))
        out, filled = resample_slices(hu, along - along[0], step, JITTER_MM)
        notes.append(f"non-uniform slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm); resampled to a "
                     f"uniform {step:.2f} mm, {len(filled)} slice(s) interpolated and marked")
        return out, step, filled
    if residual > _POSITION_TOL_MM:
        notes.append(f"slice positions jitter by up to {residual:.2f} mm; taken on a uniform {step:.3f} mm grid "
                     "(no resampling)")
    missing = np.diff(index) - 1
    if not missing.any():
        return hu, float(step), []
    widest = int(missing.max())
    if widest > MAX_FILLED and not allow_gaps:
        k = int(np.argmax(missing))
        raise SliceGapError(where, f"{widest} slices missing in a row (a {gaps[k]:.2f} mm gap after "
                            f"{along[k]:.2f} mm where the spacing is {step:.2f} mm); filling more than "
                            f"{MAX_FILLED} would invent anatomy — open with --allow-gaps to fill it anyway")
    out, filled = fill_missing(hu, index)
    notes.append(f"{len(filled)} missing slice(s) (up to {widest} in a row) filled by interpolation and marked "
                 "as interpolated")
    return out, float(step), filled


def read_series(series: DicomSeries, where: Path, report: ScanReport, progress=None,
                cancel=None, allow_gaps: bool = False) -> CtVolume:
    notes: list[str] = []
    modality = series.modality
    if modality in _NON_CT:
        raise ScanError(where, f"series {series.display_uid} is {modality}, not CT; "
                        "LungView reads CT scans only")
    if any(h.samples_per_pixel != 1 for h in series.headers):
        raise ScanError(where, "colour (multi-sample) images, not a CT scan")
    if any(h.frames > 1 for h in series.headers):
        raise ScanError(where, "multi-frame (enhanced) DICOM is not supported yet; export the "
                        "series as single-frame images")
    if modality != "CT":
        notes.append(f"modality is {modality!r}, not 'CT'; values are assumed to be HU")
    headers = _split_mixed(series, notes)
    headers, along, shift_cr, direction, (row_mm, col_mm) = _geometry(headers, where, notes)

    rows, cols = headers[0].rows, headers[0].cols
    hu = np.empty((len(headers), rows, cols), dtype=np.int16)
    converter = HuConverter()
    for k, h in enumerate(headers):
        check_cancel(cancel)
        stored = read_stored_pixels(h)
        if stored.shape != (rows, cols):
            raise ScanError(h.path, f"pixel data is {stored.shape}, header says {(rows, cols)}")
        converter.convert(stored, h.slope, h.intercept, h.padding, out=hu[k])
        if progress is not None and (k % 8 == 0 or k == len(headers) - 1):
            progress(k + 1, len(headers), "decoding slices")
    notes.extend(converter.notes(hu.size))

    # shift_cr: in-plane offsets in mm of each slice's corner along row_dir and col_dir.
    if np.hypot(shift_cr[:, 0], shift_cr[:, 1]).max() > 0.05 * min(row_mm, col_mm):
        span = along[-1] - along[0]
        angle = np.degrees(np.arctan2(np.hypot(*(shift_cr[-1] - shift_cr[0])), span))
        deshear_slices(hu, shift_cr[:, 1] / row_mm, shift_cr[:, 0] / col_mm)
        notes.append(f"sheared geometry (gantry tilt about {angle:.1f} deg) corrected by "
                     "resampling each slice in-plane")

    hu, step, filled = _uniform_slices(hu, along, where, notes, allow_gaps)

    origin = np.array(headers[0].position, dtype=np.float64)
    thickness = headers[0].slice_thickness
    others = [summarize(s) for s in report.series if s is not series]
    if report.unreadable:
        notes.append(f"{len(report.unreadable)} file(s) in the folder are not DICOM or are damaged "
                     "and were ignored")
    return CtVolume(
        hu=hu,
        spacing_xyz=(col_mm, row_mm, step),
        origin_xyz=tuple(origin),
        direction=direction,
        source=str(where),
        modality=modality,
        series_uid=series.uid,
        study_uid=headers[0].study_uid,
        series_description=series.description,
        slice_thickness_mm=thickness,
        files=len(headers),
        other_series=others,
        warnings=notes,
        interpolated_slices=tuple(filled),
    )
