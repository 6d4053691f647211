"""Finding DICOM files and grouping them into series, from headers only (no pixel data read)."""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError

from lungview.core.jobs import check_cancel

# Uncompressed little-endian transfer syntaxes whose pixels can be read straight from the file.
_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_PIXEL_DATA_TAG = 0x7FE00010

NON_IMAGE_NAMES = {"DICOMDIR"}


@dataclass
class SliceHeader:
    """What one DICOM file says about its place in a series."""

    path: str
    series_uid: str
    study_uid: str
    modality: str
    series_number: str
    description: str
    frame_of_reference: str
    image_type: tuple[str, ...]
    instance_number: int | None
    rows: int
    cols: int
    position: np.ndarray | None  # ImagePositionPatient (x, y, z)
    orientation: np.ndarray | None  # ImageOrientationPatient, 6 cosines
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns)
    slice_thickness: float | None
    slope: float
    intercept: float
    padding: tuple[int, int] | None  # stored-value range marked as padding
    samples_per_pixel: int
    frames: int
    # Where the raw little-endian pixel values start, for the fast path; None: use the decoder.
    raw_pixels: tuple[int, str, int] | None = None  # (byte offset, numpy dtype, bits stored)

    @property
    def group_key(self) -> tuple:
        """Series identity. A missing UID never merges with a present one, and files without a
        UID group by what else they share rather than splitting into one series per file."""
        if self.series_uid:
            return ("uid", self.series_uid)
        return ("no-uid", self.study_uid, self.series_number, self.frame_of_reference,
                self.modality, self.description)

    @property
    def is_localizer(self) -> bool:
        return any(t.upper() == "LOCALIZER" for t in self.image_type)


@dataclass
class DicomSeries:
    key: tuple
    headers: list[SliceHeader]

    @property
    def uid(self) -> str:
        return self.headers[0].series_uid

    @property
    def modality(self) -> str:
        return self.headers[0].modality

    @property
    def description(self) -> str:
        return self.headers[0].description

    @property
    def display_uid(self) -> str:
        """The UID, or a stand-in naming the first file for series that have none."""
        return self.uid or f"(no SeriesInstanceUID: {Path(self.headers[0].path).name})"


@dataclass
class ScanReport:
    series: list[DicomSeries]
    unreadable: list[str]  # not DICOM, or broken
    without_pixels: list[str]  # DICOM objects that are not images (SR, RTSTRUCT, DICOMDIR, ...)


def _number(value, default=None):
    try:
        if value is None or value == "":
            return default
        return float(value)
    except (TypeError, ValueError):
        return default


def _floats(value, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _stored_int(value, signed: bool) -> int | None:
    v = _number(value)
    if v is None:
        return None
    v = int(v)
    if signed and v > 32767:  # stored as US although the pixels are signed
        v -= 65536
    return v


def _raw_pixel_location(fh, ds) -> tuple[int, str, int] | None:
    """After a header read that stopped at PixelData: the offset of uncompressed 16-bit pixels."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if syntax not in _NATIVE_LE or int(ds.get("BitsAllocated", 0) or 0) != 16:
        return None
    head = fh.read(12)
    if len(head) < 8 or int.from_bytes(head[0:2], "little") << 16 | int.from_bytes(
            head[2:4], "little") != _PIXEL_DATA_TAG:
        return None
    if syntax == "1.2.840.10008.1.2":  # implicit VR: tag, 4-byte length
        length, start = int.from_bytes(head[4:8], "little"), 8
    else:  # explicit VR OB/OW: tag, VR, 2 reserved bytes, 4-byte length
        length, start = int.from_bytes(head[8:12], "little"), 12
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if length != rows * cols * 2:
        return None
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    bits_stored = int(ds.get("BitsStored", 16) or 16)
    return fh.tell() - len(head) + start, "<i2" if signed else "<u2", bits_stored


def _text(ds, keyword: str) -> str:
    """A string-valued element (UI, DS, IS, CS, LO...) straight from its raw bytes: pydicom's
    own conversion and validation cost more than the whole rest of the header read."""
    tag = tag_for_keyword(keyword)
    elem = ds.get_item(tag) if tag is not None else None
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace").strip(" \x00")
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _texts(ds, keyword: str) -> list[str]:
    text = _text(ds, keyword)
    return [t.strip() for t in text.split("\\")] if text else []


def read_header(path: str) -> SliceHeader | None | str:
    """A SliceHeader, "no-pixels" for a DICOM object without an image, or None if not DICOM."""
    raw = None
    try:
        with warnings.catch_warnings(), open(path, "rb") as fh:
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(fh, stop_before_pixels=True)
            except InvalidDicomError:
                # Old files without the 128-byte preamble: accept only if they look like images.
                fh.seek(0)
                ds = pydicom.dcmread(fh, force=True, stop_before_pixels=True)
                if "Rows" not in ds or "Columns" not in ds or "SOPClassUID" not in ds:
                    return None
            if "Rows" not in ds or "Columns" not in ds:
                return "no-pixels"
            raw = _raw_pixel_location(fh, ds)
    except Exception:  # noqa: BLE001 - anything unparsable is simply not a DICOM image here
        return None
    try:
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        pad = _stored_int(ds.get("PixelPaddingValue"), signed)
        limit = _stored_int(ds.get("PixelPaddingRangeLimit"), signed)
        padding = None if pad is None else (min(pad, limit if limit is not None else pad),
                                            max(pad, limit if limit is not None else pad))
        spacing = _floats(_texts(ds, "PixelSpacing"), 2)
        inst = _number(_text(ds, "InstanceNumber"))
        return SliceHeader(
            path=path,
            series_uid=_text(ds, "SeriesInstanceUID"),
            study_uid=_text(ds, "StudyInstanceUID"),
            modality=_text(ds, "Modality").upper() or "unknown",
            series_number=_text(ds, "SeriesNumber"),
            description=_text(ds, "SeriesDescription"),
            frame_of_reference=_text(ds, "FrameOfReferenceUID"),
            image_type=tuple(_texts(ds, "ImageType")),
            instance_number=None if inst is None else int(inst),
            rows=int(ds.get("Rows", 0) or 0),
            cols=int(ds.get("Columns", 0) or 0),
            position=_floats(_texts(ds, "ImagePositionPatient"), 3),
            orientation=_floats(_texts(ds, "ImageOrientationPatient"), 6),
            pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
            slice_thickness=_number(_text(ds, "SliceThickness")),
            slope=_number(_text(ds, "RescaleSlope"), 1.0) or 1.0,
            intercept=_number(_text(ds, "RescaleIntercept"), 0.0),
            padding=padding,
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
            frames=int(_number(_text(ds, "NumberOfFrames"), 1) or 1),
            raw_pixels=raw,
        )
    except Exception:  # noqa: BLE001 - a header with values of the wrong type
        return None


def list_files(folder: Path) -> list[str]:
    """All regular files below `folder`, sorted, skipping hidden ones."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                found.append(os.path.join(root, name))
    return found


def scan_files(paths: list[str], progress=None, cancel=None) -> ScanReport:
    """Read the headers of `paths` and group the images into series, largest first."""
    groups: dict[tuple, list[SliceHeader]] = defaultdict(list)
    unreadable: list[str] = []
    without_pixels: list[str] = []
    for i, path in enumerate(paths):
        if Path(path).name.upper() in NON_IMAGE_NAMES:
            without_pixels.append(path)
            continue
        header = read_header(path)
        if header is None:
            unreadable.append(path)
        elif header == "no-pixels":
            without_pixels.append(path)
        else:
            groups[header.group_key].append(header)  # type: ignore[union-attr]
        if progress is not None and (i % 16 == 0 or i == len(paths) - 1):
            progress(i + 1, len(paths), "reading DICOM headers")
        if i % 16 == 0:
            check_cancel(cancel)
    series = [DicomSeries(k, h) for k, h in groups.items()]
    series.sort(key=lambda s: (s.modality != "CT", -len(s.headers)))
    return ScanReport(series, unreadable, without_pixels)
