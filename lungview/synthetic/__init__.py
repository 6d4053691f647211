"""Seeded synthetic chest CT phantoms with ground truth, for tests, the demo and demo models."""

from __future__ import annotations

import os
from pathlib import Path

from lungview.io.annotations import Annotation, write_annotations
from lungview.io.write import write_dicom_series, write_volume
from lungview.synthetic.phantom import (NODULE_KINDS, Phantom, PhantomConfig, PhantomNodule,
                                        make_phantom)

FORMATS = ("dicom", "mhd", "mha", "nii", "nii.gz", "nrrd")

__all__ = ["FORMATS", "NODULE_KINDS", "Phantom", "PhantomConfig", "PhantomNodule",
           "make_phantom", "phantom_annotations", "write_phantom"]


def phantom_annotations(phantom: Phantom) -> list[Annotation]:
    uid = phantom.volume.series_uid
    return [Annotation(uid, n.center_xyz, n.diameter_mm,
                       {"kind": n.kind, "malignant": int(n.malignant), "margin": n.margin})
            for n in phantom.nodules]


def write_phantom(phantom: Phantom, folder: str | os.PathLike, fmt: str = "dicom",
                  **dicom_options) -> Path:
    """Write the scan in `fmt` and `annotations.csv` (LUNA16 columns plus kind, malignant,
    margin) into `folder`. Returns the path to open: the DICOM folder or the volume file."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    uid = phantom.volume.series_uid
    if fmt == "dicom":
        target = folder / "dicom"
        write_dicom_series(phantom.volume, target, **dicom_options)
    else:
        target = write_volume(phantom.volume, folder / f"{uid}.{fmt}")
    write_annotations(folder / "annotations.csv", phantom_annotations(phantom))
    return target
