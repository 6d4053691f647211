"""DICOM SEG and SR of confirmed nodules, read back with highdicom and checked by dciodvfy
(dicom3tools): the voxels given, the codes the issue names, tracking UIDs = finding ids, the
source series referenced, frames on the source slices."""

import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from lungview.io import open_volume
from lungview.review import sphere
from lungview.review.exchange import export
from lungview.review.workspace import Workspace


def dciodvfy_errors(path) -> list[str]:
    exe = shutil.which("dciodvfy") or str(Path(sys.executable).with_name("dciodvfy"))
    run = subprocess.run([exe, str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def ball(vol, center_xyz, radius_mm):
    """The test's own mask: voxels within radius of the centre (by the volume's geometry)."""
    c = vol.xyz_to_irc(np.asarray(center_xyz))
    i, r, k = np.ogrid[:vol.shape[0], :vol.shape[1], :vol.shape[2]]
    sz, sy, sx = vol.spacing_irc
    full = ((i - c[0]) * sz) ** 2 + ((r - c[1]) * sy) ** 2 + ((k - c[2]) * sx) ** 2 <= radius_mm**2
    box = tuple(slice(0, n) for n in vol.shape)
    return box, full


@pytest.fixture
def exported(phantom_dicom, small_phantom, tmp_path):
    vol = open_volume(phantom_dicom)
    ws = Workspace(tmp_path / "ws")
    ws.add_scan(vol, phantom_dicom)
    review = ws.load_review(vol.series_uid)
    big = sorted(small_phantom.nodules, key=lambda n: -n.diameter_mm)[:2]
    confirmed = [review.add(sphere(n.center_xyz, max(n.diameter_mm, 8.0), status="confirmed", type="solid",
                                   malignancy="malignant" if n.malignant else "benign")) for n in big]
    review.add(sphere((0.0, 0.0, -200.0), 6.0, status="rejected"))
    ws.save_review(vol.series_uid, review)
    masks = {f.id: ball(vol, f.center_xyz, f.diameter_mm / 2) for f in confirmed}
    provider = lambda v: (lambda f: masks[f.id])  # noqa: E731
    assert export(ws, "seg", tmp_path / "nodules.dcm", mask_of_scan=provider) == 2
    assert export(ws, "sr", tmp_path / "report.dcm", mask_of_scan=provider) == 2
    ws.close()
    return vol, confirmed, masks, tmp_path


def test_seg_holds_the_given_voxels_with_the_named_codes(exported, phantom_dicom):
    vol, confirmed, masks, out = exported
    seg = hd.seg.segread(out / "nodules.dcm")
    assert seg.SeriesInstanceUID != vol.series_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.series_uid
    sources = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p, stop_before_pixels=True)
                                                for p in Path(phantom_dicom).iterdir())}
    for n, f in enumerate(confirmed, start=1):
        desc = seg.get_segment_description(n)
        assert desc.tracking_uid == f.id
        assert (desc.segmented_property_type.value, desc.segmented_property_type.scheme_designator) == ("27925004", "SCT")
        assert (desc.anatomic_regions[0].value, desc.anatomic_regions[0].scheme_designator) == ("39607008", "SCT")
        _, mask = masks[f.id]
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            # the source file of slice k: its z position (the phantom is axial, feet first)
            (uid,) = [u for u, ds in sources.items()
                      if round((float(ds.ImagePositionPatient[2]) - vol.origin_xyz[2]) / vol.spacing_xyz[2]) == k]
            got = seg.get_pixels_by_source_instance([uid], segment_numbers=[n], combine_segments=False)[0, :, :, 0]
            assert np.array_equal(got.astype(bool), mask[k]), (n, k)
    assert dciodvfy_errors(out / "nodules.dcm") == []


def test_sr_reports_each_nodule_and_references_its_segment(exported):
    vol, confirmed, masks, out = exported
    sr = hd.sr.srread(out / "report.dcm")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    seg = pydicom.dcmread(out / "report_seg.dcm")
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_uid for g in groups] == [f.id for f in confirmed]
    for g, f in zip(groups, confirmed):
        values = {m.name.meaning: m.value for m in g.get_measurements()}
        assert values["Long axis"] == pytest.approx(f.long_axis_mm, abs=0.01)
        assert values["Volume"] == pytest.approx(f.volume_mm3, abs=0.1)
        assert g.reference_type.value in ("121191", "121231")  # Referenced Segment
        assert g.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        evals = {e.name.value: e.value.value for e in g.get_qualitative_evaluations()}
        assert evals["malignancy"] == f.malignancy and evals["lung-rads"] == f"lung-rads-{f.lung_rads}"
    assert dciodvfy_errors(out / "report.dcm") == []
    assert dciodvfy_errors(out / "report_seg.dcm") == []


def test_lidc_idri_0001_exports_through_the_cli(tmp_path, capsys):
    from lungview.cli import main
    from tests.conftest import LIDC, need_shared

    need_shared(LIDC)
    ws = tmp_path / "ws"
    assert main(["annotations", "import", str(LIDC / "luna16-annotations.csv"), "--workspace", str(ws),
                 "--scan", str(LIDC / "dicom")]) == 0
    assert main(["annotations", "export", "--workspace", str(ws), "--format", "sr", "--out",
                 str(tmp_path / "sr.dcm")]) == 0
    assert dciodvfy_errors(tmp_path / "sr.dcm") == [] and dciodvfy_errors(tmp_path / "sr_seg.dcm") == []
    seg = hd.seg.segread(tmp_path / "sr_seg.dcm")
    src = pydicom.dcmread(next((LIDC / "dicom").iterdir()), stop_before_pixels=True)
    voxel = float(src.PixelSpacing[0]) * float(src.PixelSpacing[1]) * 2.5
    diameter = (6 * np.count_nonzero(seg.pixel_array) * voxel / np.pi) ** (1 / 3)
    assert diameter == pytest.approx(23.35, rel=0.1)  # the measured mask, LUNA16's nodule


def test_seg_uses_the_painted_mask(phantom_dicom, small_phantom, tmp_path):
    """A nodule with a mask painted in the workspace exports that mask, voxel for voxel, with no
    region grow; one without needs a way to make one (a clear error otherwise)."""
    from lungview.core import LungViewError
    from lungview.review.masks import Masks

    vol = open_volume(phantom_dicom)
    ws = Workspace(tmp_path / "ws")
    ws.add_scan(vol, phantom_dicom)
    review = ws.load_review(vol.series_uid)
    n = max(small_phantom.nodules, key=lambda n: n.diameter_mm)
    f = review.add(sphere(n.center_xyz, n.diameter_mm, status="confirmed"))
    ws.save_review(vol.series_uid, review)
    painted = np.zeros((3, 4, 5), bool)
    painted[0, :2] = painted[1] = painted[2, 1:, 2:] = True  # not a ball: the export must not re-make it
    c = np.rint(n.center_irc).astype(int)
    box = tuple(slice(k - 1, k - 1 + s) for k, s in zip(c, painted.shape))
    masks = Masks(vol)
    masks.replace(f.id, box, painted)
    ws.save_masks(vol.series_uid, masks)
    assert export(ws, "seg", tmp_path / "painted.dcm") == 1
    seg = hd.seg.segread(tmp_path / "painted.dcm")
    sources = {round((float(ds.ImagePositionPatient[2]) - vol.origin_xyz[2]) / vol.spacing_xyz[2]): ds.SOPInstanceUID
               for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in Path(phantom_dicom).iterdir())}
    for k in range(3):
        got = seg.get_pixels_by_source_instance([sources[box[0].start + k]], segment_numbers=[1],
                                                combine_segments=False)[0, :, :, 0].astype(bool)
        want = np.zeros(vol.shape[1:], bool)
        want[box[1], box[2]] = painted[k]
        assert np.array_equal(got, want), k
    g = review.add(sphere(small_phantom.nodules[0].center_xyz, 6.0, status="confirmed"))
    ws.save_review(vol.series_uid, review)
    with pytest.raises(LungViewError, match="masks of nodules without a painted one"):
        export(ws, "seg", tmp_path / "other.dcm")
    assert g.id and not (tmp_path / "other.dcm").exists()
    ws.close()
