"""Writing a CtVolume: DICOM series (CT Image Storage), MetaImage, NIfTI, NRRD."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian,
                         JPEG2000Lossless, PYDICOM_IMPLEMENTATION_UID, RLELossless, generate_uid)

from lungview import __version__
from lungview.core import CtVolume
from lungview.core.atomic import atomic_path
from lungview.io.itk import UID_KEY, is_uid

_SYNTAXES = {"explicit": ExplicitVRLittleEndian, "deflate": DeflatedExplicitVRLittleEndian,
             "rle": RLELossless, "jpeg2000": JPEG2000Lossless}


def write_volume(vol: CtVolume, path: str | os.PathLike) -> Path:
    """.mhd (with .raw), .mha, .nii, .nii.gz, .nrrd, by the path's suffix. A NRRD or NIfTI keeps
    the series UID in its header, so that the file reads back as the same series."""
    path = Path(path)
    image = sitk.GetImageFromArray(vol.hu)
    image.SetSpacing(vol.spacing_xyz)
    image.SetOrigin(vol.origin_xyz)
    image.SetDirection(tuple(vol.direction.ravel()))
    # (an .mhd/.mha is named by its UID; the others keep it in their header, read back by io.itk.file_uid)
    if is_uid(vol.series_uid) and path.suffix.lower() not in (".mhd", ".mha"):
        image.SetMetaData(UID_KEY, vol.series_uid)  # NRRD: a field of its own
        if len(UID_KEY) + 1 + len(vol.series_uid) <= 79:  # NIfTI: its descrip, 79 bytes (never cut)
            image.SetMetaData("ITK_FileNotes", f"{UID_KEY}={vol.series_uid}")
    compress = path.name.endswith(".gz")
    if path.suffix.lower() == ".mhd":  # header + data file: write both, header last
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(path), useCompression=False)
    else:
        with atomic_path(path, suffix="".join(path.suffixes)) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path


def _uid(seed: str, part: str) -> str:
    return generate_uid(entropy_srcs=[seed, part])


def write_dicom_series(vol: CtVolume, folder: str | os.PathLike, *, syntax: str = "explicit",
                       unsigned: bool = False, intercept: float = -1024.0,
                       padding_value: int | None = -2048, uid_seed: str | None = None) -> list[Path]:
    """One CT Image Storage file per slice, with the tags real scanners write: UIDs, position,
    orientation, spacing, rescale, padding. `unsigned` stores uint16 (stored = HU - intercept)."""
    if syntax not in _SYNTAXES:
        raise ValueError(f"syntax must be one of {sorted(_SYNTAXES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seed = uid_seed or vol.series_uid or str(vol.source)
    study = vol.study_uid or _uid(seed, "study")
    series = vol.series_uid or _uid(seed, "series")
    frame = _uid(seed, "frame")
    now = datetime.datetime(2026, 1, 1)
    row_dir, col_dir = vol.direction[:, 0], vol.direction[:, 1]
    sx, sy, _ = vol.spacing_xyz
    paths = []
    for k in range(vol.shape[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = _uid(seed, f"slice{k}")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SOPClassUID = CTImageStorage
        ds.Modality = vol.modality if vol.modality not in ("", "unknown") else "CT"
        ds.Manufacturer = "LungView synthetic"
        ds.SoftwareVersions = __version__
        ds.PatientName, ds.PatientID = "Phantom^LungView", "LV-PHANTOM"
        ds.PatientBirthDate, ds.PatientSex = "", "O"  # the patient and study modules' type 2 attributes
        ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = now.strftime("%H%M%S")
        ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", ""
        ds.PositionReferenceIndicator, ds.PatientPosition = "", "FFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.SeriesDescription = "LungView phantom"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        position = vol.irc_to_xyz(np.array([k, 0.0, 0.0]))
        ds.ImagePositionPatient = [f"{c:.6f}" for c in position]
        ds.ImageOrientationPatient = [f"{c:.6f}" for c in (*row_dir, *col_dir)]
        ds.SliceLocation = f"{position[2]:.6f}"
        ds.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]
        ds.SliceThickness = f"{vol.slice_thickness_mm or vol.spacing_xyz[2]:.6f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = f"{intercept:g}", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"
        stored = vol.hu[k].astype(np.int32) - int(intercept)
        if unsigned:
            stored = np.clip(stored, 0, 65535).astype(np.uint16)
        else:
            stored = np.clip(stored, -32768, 32767).astype(np.int16)
        if padding_value is not None:
            pad_stored = int(np.clip(padding_value - intercept, 0 if unsigned else -32768,
                                     65535 if unsigned else 32767))
            ds.PixelPaddingValue = pad_stored
        ds.PixelData = stored.tobytes()
        if syntax in ("rle", "jpeg2000"):
            ds.compress(_SYNTAXES[syntax], stored)
        elif syntax == "deflate":
            ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        path = folder / f"{k + 1:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)  # generated data: one file per slice
        paths.append(path)
    return paths
