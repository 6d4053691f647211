"""MetaImage (.mhd/.mha), NIfTI (.nii/.nii.gz) and NRRD (.nrrd/.nhdr) through SimpleITK."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lungview.core import CtVolume, ScanError
from lungview.core.jobs import Cancelled, check_cancel
from lungview.io.hu import HuConverter, to_int16_hu

ITK_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz", ".nrrd", ".nhdr")


def _first_line(exc: Exception) -> str:
    text = str(exc)
    # ITK messages look like "Exception thrown in SimpleITK ...: /path/file.cxx:123:\nsitk::ERROR: ..."
    m = re.search(r"(?:ERROR|Error|error):\s*(.+)", text)
    line = (m.group(1) if m else text).strip().splitlines()
    return line[0] if line else type(exc).__name__


def _check_detached_data(path: Path) -> None:
    """A .mhd/.nhdr header without its data file is a common mistake: say so plainly."""
    key = {".mhd": "ElementDataFile", ".nhdr": "data file"}.get(path.suffix.lower())
    if key is None:
        return
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ScanError(path, f"cannot read ({exc.strerror})") from None
    m = re.search(rf"^\s*{key}\s*[:=]\s*(.+?)\s*$", text, flags=re.MULTILINE | re.IGNORECASE)
    if m is None:
        raise ScanError(path, f"header has no '{key}' line")
    name = m.group(1)
    if name.upper() in ("LOCAL", "LIST") or name.split()[0].upper() in ("LIST",) or "%" in name:
        return
    if not (path.parent / name).exists():
        raise ScanError(path, f"its data file {name!r} is missing")


_META_TYPES = {"MET_SHORT": "<i2", "MET_USHORT": "<u2"}


def _metaimage_raw(path: Path, size: list[int]) -> tuple[Path, int, str] | None:
    """Where the voxels of a plain (uncompressed, little-endian, 16-bit) MetaImage lie:
    (data file, byte offset, dtype). None for anything else, which SimpleITK then reads."""
    if path.suffix.lower() not in (".mhd", ".mha"):
        return None
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    fields, offset = {}, None
    pos = 0
    for line in head.splitlines(keepends=True):
        pos += len(line)
        key, _, value = line.decode("latin-1").partition("=")
        key, value = key.strip(), value.strip()
        fields[key] = value
        if key == "ElementDataFile":
            offset = pos
            break
    if offset is None or len(size) != 3:
        return None
    dtype = _META_TYPES.get(fields.get("ElementType", ""))
    if (dtype is None or fields.get("CompressedData", "False").lower() == "true"
            or fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False")).lower() == "true"
            or fields.get("ElementNumberOfChannels", "1") != "1"):
        return None
    name = fields["ElementDataFile"]
    if name == "LOCAL":
        data, start = path, offset
    elif " " in name or name.upper() == "LIST" or "%" in name:
        return None
    else:
        data, start = path.parent / name, 0
    header_size = int(fields.get("HeaderSize", "0") or 0)
    n_bytes = 2 * size[0] * size[1] * size[2]
    if header_size == -1:
        start = data.stat().st_size - n_bytes
    else:
        start += header_size
    if data.stat().st_size < start + n_bytes:
        raise ScanError(path, f"data file {data.name!r} is shorter than the header says")
    return data, start, dtype


def _read_metaimage_raw(data: Path, start: int, dtype: str, size: list[int], progress=None, cancel=None):
    """Straight into the int16 array in ~2 MiB chunks; a second thread converts each chunk
    (padding -> air) while the next is read, so validation costs almost no extra time."""
    nx, ny, nz = size
    hu = np.empty((nz, ny, nx), dtype=np.int16)
    converter = HuConverter()  # used by the worker thread only
    step = max(1, (1 << 21) // (2 * nx * ny))

    def convert(k0: int, k1: int, raw: np.ndarray | None) -> None:
        for j in range(k0, k1):
            src = hu[j] if raw is None else raw[j - k0]
            converter.convert(src, 1.0, 0.0, None, out=hu[j])

    with open(data, "rb") as fh, ThreadPoolExecutor(max_workers=1) as pool:
        fh.seek(start)
        pending = []
        for k in range(0, nz, step):
            k1 = min(k + step, nz)
            if dtype == "<i2":
                fh.readinto(memoryview(hu[k:k1]).cast("B"))
                raw = None
            else:
                raw = np.empty((k1 - k, ny, nx), dtype=np.uint16)
                fh.readinto(memoryview(raw).cast("B"))
            pending.append(pool.submit(convert, k, k1, raw))
            if cancel is not None and cancel.is_set():
                for job in pending:
                    job.cancel()
                raise Cancelled("cancelled")
            if progress is not None:
                progress(k1, nz, "reading voxels")
        for job in pending:
            job.result()
    return hu, converter.notes(hu.size)


def _read_with_simpleitk(path: Path, reader, dim: int, cancel=None):
    if cancel is not None:  # ITK readers call this now and then; Abort() makes Execute() raise
        reader.AddCommand(sitk.sitkProgressEvent, lambda: reader.Abort() if cancel.is_set() else None)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        check_cancel(cancel)  # an abort is no damage
        raise ScanError(path, f"cannot read voxel data ({_first_line(exc)})") from None
    check_cancel(cancel)
    if dim == 4:
        image = image[:, :, :, 0]
    values = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(values.dtype, np.number):
        raise ScanError(path, f"unsupported voxel type {values.dtype}")
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values[::4, ::4, ::4])):
        raise ScanError(path, "voxel data holds NaN or infinite values")
    return to_int16_hu(values)


UID_KEY = "SeriesInstanceUID"  # NRRD: a key:=value field; NIfTI: "SeriesInstanceUID=<uid>" as its descrip
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")


def is_uid(text: str) -> bool:
    """A DICOM UID: dot-separated numbers without leading zeros, at most 64 characters."""
    return len(text) <= 64 and _UID.fullmatch(text) is not None


def file_uid(path: Path, reader=None) -> str:
    """The series UID a volume file carries. LUNA16 names each scan <SeriesInstanceUID>.mhd: the
    file name minus its extension (UIDs hold dots, so never cut at the first one). A NRRD or
    NIfTI written by LungView keeps it in its header (`UID_KEY`); other files carry none: "" (the
    caller then derives one from the content)."""
    suffix = path.suffix.lower()
    if suffix in (".mhd", ".mha"):
        return path.name[: -len(suffix)]
    if reader is None:
        return ""
    keys = set(reader.GetMetaDataKeys())
    text = reader.GetMetaData(UID_KEY) if UID_KEY in keys else ""
    if not text and "descrip" in keys and reader.GetMetaData("descrip").startswith(UID_KEY + "="):
        text = reader.GetMetaData("descrip")[len(UID_KEY) + 1:]
    text = text.strip().rstrip("\0")
    return text if is_uid(text) else ""


def read_itk(path: Path, progress=None, cancel=None) -> CtVolume:
    if path.stat().st_size == 0:
        raise ScanError(path, "empty file (0 bytes)")
    _check_detached_data(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ScanError(path, f"not a readable image ({_first_line(exc)})") from None
    size = list(reader.GetSize())
    dim = reader.GetDimension()
    if reader.GetNumberOfComponents() != 1:
        raise ScanError(path, f"{reader.GetNumberOfComponents()} components per voxel "
                        "(colour or vector image), not a CT scan")
    if dim == 2 or (dim == 3 and 1 in size):
        raise ScanError(path, f"a 2D image (size {size}), not a volume")
    if dim == 4 and size[3] != 1:
        raise ScanError(path, f"4D data with {size[3]} volumes; LungView opens one 3D CT")
    if dim not in (3, 4):
        raise ScanError(path, f"{dim}D data; LungView opens 3D CT volumes")
    if progress is not None:
        progress(0, size[2], "reading voxels")
    raw = _metaimage_raw(path, size) if dim == 3 else None
    if raw is not None:
        hu, notes = _read_metaimage_raw(*raw, size, progress, cancel)
    else:
        hu, notes = _read_with_simpleitk(path, reader, dim, cancel)
    if progress is not None:
        progress(size[2], size[2], "reading voxels")
    spacing = reader.GetSpacing()[:3]
    direction = np.array(reader.GetDirection(), dtype=np.float64)
    direction = direction.reshape(dim, dim)[:3, :3]
    if abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
        raise ScanError(path, "direction matrix is not orthonormal (sheared geometry)")
    if min(spacing) <= 0:
        raise ScanError(path, f"non-positive voxel spacing {tuple(spacing)}")
    lo = int(hu.min())
    if lo > -500:
        notes.append(f"lowest value is {lo}, no air: the values may not be Hounsfield units")
    return CtVolume(hu=hu, spacing_xyz=tuple(spacing), origin_xyz=tuple(reader.GetOrigin()[:3]),
                    direction=direction, source=str(path), modality="CT" if lo <= -500 else "unknown",
                    series_uid=file_uid(path, reader),
                    files=1, warnings=notes)
