"""Slice geometry of DICOM series: jitter, missing slices, irregular spacing, duplicates and
gantry tilt, each checked against the phantom the series was cut from."""

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from lungview.cli import main
from lungview.core import CtVolume
from lungview.io import open_volume
from lungview.io.dicom import SliceGapError
from lungview.io.write import write_dicom_series
from lungview.synthetic import make_phantom, write_phantom
from tests.conftest import expected_hu


@pytest.fixture(scope="module")
def smooth_scan():
    """A noise-free phantom blurred a little (sigma 1.5 voxels): interpolating it linearly is
    nearly exact, so that what a reader does wrong stands out."""
    vol = make_phantom(9, size=128, slices=60, pixel_mm=2.8, slice_mm=1.0, nodules=3, noise_hu=0.0,
                       padding_hu=None).volume
    hu = np.rint(ndimage.gaussian_filter(vol.hu.astype(float), 1.5)).astype(np.int16)
    return CtVolume(hu=hu, spacing_xyz=vol.spacing_xyz, origin_xyz=vol.origin_xyz, series_uid="1.2.3.98")


def _series(vol, folder, pick):
    """A DICOM series of the slices `pick` of `vol` (at their true positions)."""
    write_dicom_series(vol, folder, padding_value=None)
    files = sorted(folder.iterdir())
    for k, f in enumerate(files):
        if k not in pick:
            f.unlink()
    return folder


def test_one_and_two_missing_slices_are_filled_and_marked(small_phantom, tmp_path):
    path = write_phantom(small_phantom, tmp_path, "dicom")
    files = sorted(path.iterdir())
    for k in (10, 30, 31):
        files[k].unlink()
    vol = open_volume(path)
    want = expected_hu(small_phantom)
    assert vol.shape == small_phantom.volume.shape
    assert vol.interpolated_slices == (10, 30, 31)
    assert any("3 missing slice(s) (up to 2 in a row)" in w and "marked" in w for w in vol.warnings)
    # a single gap: the mean of its neighbours; a double one: thirds
    np.testing.assert_array_equal(vol.hu[10], np.rint((want[9].astype(float) + want[11]) / 2))
    np.testing.assert_array_equal(vol.hu[30], np.rint(want[29] * (2 / 3) + want[32] * (1 / 3)))
    measured = [k for k in range(vol.shape[0]) if k not in (10, 30, 31)]
    np.testing.assert_array_equal(vol.hu[measured], want[measured])  # the rest untouched


def test_a_wider_gap_is_refused_unless_allowed(small_phantom, tmp_path, capsys):
    path = write_phantom(small_phantom, tmp_path, "dicom")
    for f in sorted(path.iterdir())[20:23]:
        f.unlink()
    with pytest.raises(SliceGapError, match=r"3 slices missing in a row .*--allow-gaps") as info:
        open_volume(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    vol = open_volume(path, allow_gaps=True)
    assert vol.interpolated_slices == (20, 21, 22) and vol.shape == small_phantom.volume.shape
    assert main(["info", str(path)]) == 2
    assert "--allow-gaps" in capsys.readouterr().err
    assert main(["info", str(path), "--allow-gaps", "--json"]) == 0
    assert '"interpolated_slices": [\n    20,\n    21,\n    22\n  ]' in capsys.readouterr().out


def test_position_jitter_is_absorbed_without_resampling(small_phantom, tmp_path):
    path = write_phantom(small_phantom, tmp_path, "dicom")
    rng = np.random.default_rng(3)
    for f in sorted(path.iterdir()):
        ds = pydicom.dcmread(f)
        pos = np.array(ds.ImagePositionPatient, float)
        pos[2] = round(pos[2] + rng.uniform(-0.04, 0.04), 2)  # rounded to 0.01 mm, +-0.04 jitter
        ds.ImagePositionPatient = [f"{c:.6f}" for c in pos]
        ds.save_as(f)
    vol = open_volume(path)
    np.testing.assert_array_equal(vol.hu, expected_hu(small_phantom))  # no slice blended
    assert vol.interpolated_slices == ()
    assert vol.spacing_xyz[2] == pytest.approx(small_phantom.volume.spacing_xyz[2], abs=0.01)
    assert any("jitter" in w for w in vol.warnings)


def test_irregular_spacing_is_resampled_close_to_the_truth(smooth_scan, tmp_path):
    # slices at 0, 2, 3, 5, 7, 8, 10 ... mm: gaps of 2 and 1 mm, resampled to 2 mm steps
    keep = [k for k in range(60) if k % 5 in (0, 2, 3)]
    path = _series(smooth_scan, tmp_path / "s", keep)
    vol = open_volume(path)
    truth = smooth_scan.hu.astype(float)
    step = vol.spacing_xyz[2]
    z = np.arange(vol.shape[0]) * step + keep[0]  # mm from the phantom's first slice (1 mm slices)
    assert any("non-uniform slice spacing" in w for w in vol.warnings)
    assert vol.interpolated_slices and len(vol.interpolated_slices) < vol.shape[0]
    for k in range(vol.shape[0]):
        true = truth[int(round(z[k]))]
        if k in vol.interpolated_slices:
            # linear between the two measured slices around it: close to the true slice there,
            # far closer than the nearest measured slice is
            nearest = truth[min(keep, key=lambda j: abs(j - z[k]))]
            error = np.abs(vol.hu[k] - true).mean()
            assert error < 6.0 and error < 0.5 * np.abs(nearest - true).mean(), k
        else:
            np.testing.assert_array_equal(vol.hu[k], true)  # measured: as it was


def test_which_duplicate_is_kept(small_phantom, tmp_path):
    path = write_phantom(small_phantom, tmp_path, "dicom")
    src = sorted(path.iterdir())[5]
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.InstanceNumber = 999  # a later instance at the same place, with other pixels
    ds.PixelData = (ds.pixel_array + 100).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(path / "dup.dcm")
    vol = open_volume(path)
    assert any("duplicate positions" in w for w in vol.warnings)
    np.testing.assert_array_equal(vol.hu, expected_hu(small_phantom))  # the first by instance number
    # the same duplicate with the lower instance number wins instead
    ds.InstanceNumber = 0
    ds.save_as(path / "dup.dcm")
    vol = open_volume(path)
    assert np.median(vol.hu[5].astype(int) - expected_hu(small_phantom)[5]) == 100


def test_gantry_tilt_gives_a_tilted_volume_that_matches_the_scan(smooth_scan, tmp_path):
    """Sample the phantom as a scanner with its gantry tilted by 12 degrees would: each image
    plane tilted about x, the slice origins stacked straight along the table (z). Every slice
    is then shifted sideways by a fraction of a pixel more than the last."""
    src = smooth_scan
    theta = np.radians(12.0)
    row_dir, col_dir = np.array([1.0, 0, 0]), np.array([0.0, np.cos(theta), np.sin(theta)])
    px, step, n, size = 2.8, 2.0, 18, 110
    start = np.array(src.origin_xyz) + [10.0, 10.0, 12.0]
    rr, cc = np.mgrid[0:size, 0:size]
    slices = []
    for k in range(n):
        xyz = start + [0, 0, k * step] + cc[..., None] * px * row_dir + rr[..., None] * px * col_dir
        irc = src.xyz_to_irc(xyz.reshape(-1, 3)).T
        slices.append(ndimage.map_coordinates(src.hu.astype(float), irc, order=1, cval=-1000).reshape(size, size))
    folder = tmp_path / "tilted"
    write_dicom_series(CtVolume(hu=np.rint(slices).astype(np.int16), spacing_xyz=(px, px, step),
                                origin_xyz=tuple(start), series_uid="1.2.3.99"), folder, padding_value=None)
    for k, f in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [f"{c:.6f}" for c in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [f"{c:.6f}" for c in start + [0, 0, k * step]]
        ds.save_as(f)
    vol = open_volume(folder)
    (note,) = [w for w in vol.warnings if "gantry tilt" in w]
    assert "about 12.0 deg" in note
    np.testing.assert_allclose(vol.direction[:, 1], col_dir, atol=1e-6)  # the tilted planes kept
    assert vol.spacing_xyz[2] == pytest.approx(step * np.cos(theta), rel=1e-4)
    # every voxel where the scanner put it: compare with the phantom at the same patient position
    i, r, c = np.mgrid[2:n - 2, 8:size - 8, 8:size - 8]
    xyz = vol.irc_to_xyz(np.stack([i, r, c], -1).reshape(-1, 3).astype(float))
    truth = ndimage.map_coordinates(src.hu.astype(float), src.xyz_to_irc(xyz).T, order=1, cval=-1000)
    got = vol.hu[2:n - 2, 8:size - 8, 8:size - 8].ravel().astype(float)
    error = np.abs(got - truth).mean()
    # reading the slices as if untilted puts them up to 4.5 pixels off: far larger errors
    naive = np.array(slices)[2:n - 2, 8:size - 8, 8:size - 8].ravel()
    assert error < 6.0 and np.abs(naive - truth).mean() > 4 * error


def _foreign(vol, path, **fields):
    """`vol` written by SimpleITK alone, as another tool writes it: no UID unless `fields` hold one."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(vol.hu)
    image.SetSpacing(vol.spacing_xyz)
    image.SetOrigin(vol.origin_xyz)
    for key, value in fields.items():
        image.SetMetaData(key, value)
    sitk.WriteImage(image, str(path))
    return path


def test_files_without_a_uid_get_a_stable_one_from_their_content(small_phantom, tmp_path):
    vol = small_phantom.volume
    nii, nrrd = _foreign(vol, tmp_path / "a.nii.gz"), _foreign(vol, tmp_path / "b.nrrd")
    uid = open_volume(nii).series_uid
    assert uid.startswith("2.25.") and len(uid) <= 64 and set(uid) <= set("0123456789.")
    assert open_volume(nii).series_uid == uid == open_volume(nrrd).series_uid  # same voxels, same geometry
    other = CtVolume(hu=vol.hu.copy(), spacing_xyz=vol.spacing_xyz, origin_xyz=(0.0, 0.0, 1.0))
    assert open_volume(_foreign(other, tmp_path / "moved.nii")).series_uid != uid
    # a field that is no UID (a leading zero, a letter) is not taken for one
    assert open_volume(_foreign(vol, tmp_path / "c.nrrd", SeriesInstanceUID="1.02.3")).series_uid == uid
    assert open_volume(_foreign(vol, tmp_path / "d.nii", ITK_FileNotes="SeriesInstanceUID=1.2.x")).series_uid == uid


def test_nrrd_and_nifti_written_by_lungview_keep_their_series_uid(small_phantom, tmp_path):
    """A phantom written as NRRD or NIfTI reads back as its own series, so its annotations.csv
    matches it (and it is known for a phantom); the header is read by SimpleITK, not by us."""
    import SimpleITK as sitk

    from lungview.io.annotations import read_annotations
    from lungview.synthetic.phantom import is_phantom_uid

    uid = small_phantom.volume.series_uid
    for fmt in ("nrrd", "nii.gz", "nii"):
        path = write_phantom(small_phantom, tmp_path / fmt, fmt)
        vol = open_volume(path)
        assert vol.series_uid == uid and is_phantom_uid(vol.series_uid), fmt
        assert {a.series_uid for a in read_annotations(path.parent / "annotations.csv")} == {uid}, fmt
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        header = reader.GetMetaData("descrip" if "nii" in fmt else "SeriesInstanceUID")
        assert header.rstrip("\0") == (f"SeriesInstanceUID={uid}" if "nii" in fmt else uid), fmt
    # a DICOM UID of 64 characters does not fit NIfTI's 79-byte descrip: never written cut short
    long_uid = "1.2." + "3" * 60
    vol = CtVolume(hu=small_phantom.volume.hu, spacing_xyz=small_phantom.volume.spacing_xyz, origin_xyz=(0, 0, 0),
                   series_uid=long_uid)
    from lungview.io.write import write_volume

    assert open_volume(write_volume(vol, tmp_path / "long.nrrd")).series_uid == long_uid
    assert open_volume(write_volume(vol, tmp_path / "long.nii")).series_uid.startswith("2.25.")


def test_cancelling_stops_header_scans_and_itk_reads(small_phantom, tmp_path):
    from lungview.core.jobs import Cancelled, CancelToken

    token = CancelToken()
    token.cancel()
    for fmt in ("dicom", "mhd", "nii.gz"):
        path = write_phantom(small_phantom, tmp_path / fmt.replace(".", "_"), fmt)
        with pytest.raises(Cancelled):
            open_volume(path, cancel=token)
