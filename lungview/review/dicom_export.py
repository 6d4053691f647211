"""DICOM SEG and SR (TID 1500) of a scan's confirmed nodules, through highdicom.

SEG: one segment per confirmed nodule, property Nodule (SCT 27925004) in Lung (SCT 39607008),
its tracking UID the finding's id, its frames those of the source series (each source image's
pixels looked up in the scan's voxels, so a reoriented volume still lines up). SR: a
Comprehensive 3D SR measurement report with one volumetric measurement group per nodule
(tracking id and UID, the SEG's segment, long and short axis, equivalent diameter, volume, and
as qualitative evaluations its type, the reader's malignancy label and its Lung-RADS category,
under LungView's private coding scheme 99LUNGVIEW). Both need the DICOM series the scan was read
from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lungview import __version__
from lungview.core import CtVolume, LungViewError
from lungview.core.atomic import atomic_path
from lungview.review.model import Finding

NODULE = ("27925004", "SCT", "Nodule")
LUNG = ("39607008", "SCT", "Lung")
ABNORMAL = ("49755003", "SCT", "Morphologically abnormal structure")
SCHEME = "99LUNGVIEW"

MaskOf = Callable[[Finding], tuple[tuple[slice, ...], np.ndarray]]  # (box, bool mask) in the volume


def _code(value, scheme, meaning):
    from pydicom.sr.coding import Code

    return Code(value, scheme, meaning)


def source_datasets(path: str | os.PathLike, series_uid: str) -> list:
    """The series' instances (headers only), or a clear error when the scan is not DICOM."""
    import pydicom

    from lungview.io.dicom import choose_series
    from lungview.io.dicom_scan import list_files, scan_files

    where = Path(path)
    if not where.exists():
        raise LungViewError(f"{where}: the scan is no longer there; SEG and SR reference its DICOM files")
    files = list_files(where) if where.is_dir() else [str(where)]
    report = scan_files(files)
    if not report.series:
        raise LungViewError(f"{where}: not a DICOM series; SEG and SR need the DICOM images they refer to")
    series = choose_series(report, where, series_uid)
    return [pydicom.dcmread(h.path, stop_before_pixels=True) for h in series.headers]


def _frames(vol: CtVolume, labels: np.ndarray, datasets) -> tuple[list, np.ndarray]:
    """The source images that are slices of the volume, and the label map on each one's pixels."""
    kept, frames = [], []
    for ds in datasets:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds or \
                (int(ds.Rows), int(ds.Columns)) != tuple(vol.shape[1:]) and \
                (int(ds.Columns), int(ds.Rows)) != tuple(vol.shape[1:]):
            continue
        p0 = np.array(ds.ImagePositionPatient, dtype=np.float64)
        iop = np.array(ds.ImageOrientationPatient, dtype=np.float64)
        dr, dc = (float(v) for v in ds.PixelSpacing)

        def irc(r, c):
            return vol.xyz_to_irc(p0 + c * dc * iop[:3] + r * dr * iop[3:])

        o = irc(0, 0)
        if abs(o[0] - round(o[0])) > 0.1 or not -0.5 < o[0] < vol.shape[0] - 0.5:
            continue  # not one of the volume's slices (a localizer)
        step_r, step_c = irc(1, 0) - o, irc(0, 1) - o
        rr, cc = np.mgrid[0:int(ds.Rows), 0:int(ds.Columns)]
        idx = [np.rint(o[a] + rr * step_r[a] + cc * step_c[a]).astype(np.int64) for a in range(3)]
        inside = np.all([(i >= 0) & (i < n) for i, n in zip(idx, vol.shape)], axis=0)
        frame = np.zeros(rr.shape, dtype=np.uint8)
        frame[inside] = labels[idx[0][inside], idx[1][inside], idx[2][inside]]
        kept.append(ds)
        frames.append(frame)
    if not kept:
        raise LungViewError("none of the series' images lies on the scan's slices")
    return kept, np.stack(frames)


def build_seg(vol: CtVolume, findings: list[Finding], mask_of: MaskOf, datasets):
    import highdicom as hd
    from pydicom.uid import generate_uid

    labels = np.zeros(vol.shape, dtype=np.uint8)
    for n, f in enumerate(findings, start=1):
        box, mask = mask_of(f)
        labels[box][mask] = n
    sources, frames = _frames(vol, labels, datasets)
    algorithm = hd.AlgorithmIdentificationSequence(name="LungView", version=__version__,
                                                   family=_code("123109", "DCM", "Manual Processing"))
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=f"Nodule {n}",
        segmented_property_category=_code(*ABNORMAL), segmented_property_type=_code(*NODULE),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, algorithm_identification=algorithm,
        tracking_uid=f.id, tracking_id=f"Nodule {n}",
        anatomic_regions=[_code(*LUNG)]) for n, f in enumerate(findings, start=1)]
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=900,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="LungView",
        manufacturer_model_name="LungView", software_versions=__version__, device_serial_number="0",
        series_description="LungView nodules", omit_empty_frames=True)


def build_sr(findings: list[Finding], seg, datasets):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    mm, mm3 = _code("mm", "UCUM", "millimeter"), _code("mm3", "UCUM", "cubic millimeter")
    groups = []
    for n, f in enumerate(findings, start=1):
        measurements = [
            hd.sr.Measurement(name=_code("103339001", "SCT", "Long axis"), value=round(f.long_axis_mm, 2), unit=mm),
            hd.sr.Measurement(name=_code("103340004", "SCT", "Short axis"), value=round(f.short_axis_mm, 2), unit=mm),
            hd.sr.Measurement(name=_code("81827009", "SCT", "Diameter"), value=round(f.diameter_mm, 2), unit=mm),
            hd.sr.Measurement(name=_code("118565006", "SCT", "Volume"), value=round(f.volume_mm3, 1), unit=mm3)]
        evaluations = [
            hd.sr.QualitativeEvaluation(_code("type", SCHEME, "Nodule type"), _code(f.type, SCHEME, f.type)),
            hd.sr.QualitativeEvaluation(_code("malignancy", SCHEME, "Reader's malignancy label"),
                                        _code(f.malignancy, SCHEME, f.malignancy))]
        if f.lung_rads:
            evaluations.append(hd.sr.QualitativeEvaluation(
                _code("lung-rads", SCHEME, "Lung-RADS v2022 category"),
                _code(f"lung-rads-{f.lung_rads}", SCHEME, f"Lung-RADS {f.lung_rads}")))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=f.id, identifier=f"Nodule {n}"),
            referenced_segment=hd.sr.ReferencedSegment(  # (from_segmentation fails on a single segment)
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=n,
                source_series=hd.sr.SourceSeriesForSegmentation(datasets[0].SeriesInstanceUID)),
            finding_type=_code(*NODULE), finding_sites=[hd.sr.FindingSite(_code(*LUNG))],
            measurements=measurements, qualitative_evaluations=evaluations))
    context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^LungView")),
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(), name="LungView", manufacturer_name="LungView")))
    report = hd.sr.MeasurementReport(observation_context=context,
                                     procedure_reported=_code("25045-6", "LN", "CT unspecified body region"),
                                     imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[seg, *datasets], content=report, series_instance_uid=generate_uid(), series_number=901,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="LungView",
        series_description="LungView nodule measurements")


def _save(ds, path: Path) -> None:
    try:
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    except OSError as exc:
        raise LungViewError(f"{path}: cannot write ({exc.strerror})") from None


def export_dicom(ws, fmt: str, out: str | os.PathLike, reviews: dict, mask_of_scan=None, vol=None) -> int:
    """`reviews`: series UID -> Review, the scans to choose from. A nodule's segment is its painted
    mask (the workspace's masks.npz), else `mask_of_scan(vol) -> mask_of` makes one (the CLI and
    the viewer pass the measurement's region grow).
    `vol`: the scan when it is already open (the viewer's), else it is read again. The SR is
    written with its SEG beside it (OUT stem + _seg.dcm)."""
    from lungview.io import open_volume

    out = Path(out)
    with_confirmed = [uid for uid, r in reviews.items() if any(f.status == "confirmed" for f in r.findings)]
    if not with_confirmed:
        raise LungViewError("no confirmed nodule to export (confirm findings with A first)")
    if len(with_confirmed) > 1:
        raise LungViewError("a DICOM SEG or SR holds one scan's nodules: choose it with --scan")
    uid = with_confirmed[0]
    entry = ws.entry(uid)
    datasets = source_datasets(entry.path, uid)
    if vol is None or vol.series_uid != uid:
        vol = open_volume(entry.path, series=uid)
    findings = [f for f in reviews[uid].findings if f.status == "confirmed"]
    painted = ws.load_masks(uid, vol)
    unpainted = [f for f in findings if painted.mask(f.id) is None]
    if unpainted and mask_of_scan is None:
        raise LungViewError("no way to make the masks of nodules without a painted one was given")
    grown = mask_of_scan(vol) if unpainted else None
    seg = build_seg(vol, findings, lambda f: painted.mask(f.id) or grown(f), datasets)
    if fmt == "seg":
        _save(seg, out)
    else:
        sr = build_sr(findings, seg, datasets)
        _save(seg, out.with_name(out.stem + "_seg.dcm"))
        _save(sr, out)
    return len(findings)
