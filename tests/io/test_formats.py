"""Every reader on phantoms written in every format, and the geometry fixes."""

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from lungview.core import CtVolume, ScanError
from lungview.io import open_volume
from lungview.io.write import write_dicom_series, write_volume
from lungview.synthetic import write_phantom
from tests.conftest import expected_hu


@pytest.mark.parametrize("fmt", ["dicom", "mhd", "mha", "nii", "nii.gz", "nrrd"])
def test_round_trip_every_format(small_phantom, tmp_path, fmt):
    path = write_phantom(small_phantom, tmp_path, fmt)
    vol = open_volume(path)
    np.testing.assert_array_equal(vol.hu, expected_hu(small_phantom))
    np.testing.assert_allclose(vol.spacing_xyz, small_phantom.volume.spacing_xyz, atol=1e-5)
    np.testing.assert_allclose(vol.origin_xyz, small_phantom.volume.origin_xyz, atol=1e-4)
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-6)
    assert any("padding" in w for w in vol.warnings)
    assert vol.hu.dtype == np.int16


@pytest.mark.parametrize("syntax", ["rle", "jpeg2000", "deflate"])
def test_compressed_dicom_series(small_phantom, tmp_path, syntax):
    path = write_phantom(small_phantom, tmp_path, "dicom", syntax=syntax)
    assert pydicom.dcmread(next(path.iterdir())).file_meta.TransferSyntaxUID.name
    np.testing.assert_array_equal(open_volume(path).hu, expected_hu(small_phantom))


def test_unsigned_storage_and_padding_value(small_phantom, tmp_path):
    path = write_phantom(small_phantom, tmp_path, "dicom", unsigned=True)
    ds = pydicom.dcmread(next(path.iterdir()))
    assert ds.PixelRepresentation == 0 and ds.PixelPaddingValue == 0
    vol = open_volume(path)
    want = expected_hu(small_phantom)
    real = want > -1024  # stored 0 (HU -1024) is the padding value itself
    np.testing.assert_array_equal(vol.hu[real], want[real])
    assert np.all(vol.hu[~real] == -1000)


def test_rescale_slope_is_applied(small_phantom, tmp_path):
    path = write_phantom(small_phantom, tmp_path, "dicom")
    for f in path.iterdir():
        ds = pydicom.dcmread(f)
        stored = ds.pixel_array.astype(np.int32)
        ds.PixelData = (stored * 2).astype(np.int16).tobytes()  # HU = stored*0.5 - 1024
        ds.RescaleSlope = "0.5"
        ds.save_as(f)
    np.testing.assert_array_equal(open_volume(path).hu, expected_hu(small_phantom))


def test_single_file_opens_whole_series(phantom_dicom, small_phantom):
    vol = open_volume(sorted(phantom_dicom.iterdir())[10])
    assert vol.shape == small_phantom.volume.shape
    assert vol.files == small_phantom.volume.shape[0]


def test_mixed_sizes_and_localizer_are_set_aside(small_phantom, tmp_path):
    path = write_phantom(small_phantom, tmp_path, "dicom")
    ds = pydicom.dcmread(sorted(path.iterdir())[0])
    small = ds.pixel_array[:64, :64].copy()
    ds.Rows, ds.Columns, ds.PixelData = 64, 64, small.tobytes()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path / "odd.dcm")
    loc = pydicom.dcmread(sorted(path.iterdir())[3])
    loc.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    loc.SOPInstanceUID = pydicom.uid.generate_uid()
    loc.ImagePositionPatient = [0, 0, 0]
    loc.save_as(path / "scout.dcm")
    vol = open_volume(path)
    assert vol.shape == small_phantom.volume.shape
    assert any("mixed image sizes" in w for w in vol.warnings)
    assert any("localizer" in w for w in vol.warnings)


def _second_series(small_phantom, folder, slices=20, uid="1.2.3.4.5"):
    vol = small_phantom.volume
    other = CtVolume(hu=vol.hu[:slices].copy(), spacing_xyz=vol.spacing_xyz,
                     origin_xyz=vol.origin_xyz, series_uid=uid, study_uid=vol.study_uid)
    write_dicom_series(other, folder)


def test_several_series_largest_ct_first_and_choosable(small_phantom, tmp_path):
    write_phantom(small_phantom, tmp_path / "a", "dicom")
    _second_series(small_phantom, tmp_path / "b" / "nested")
    vol = open_volume(tmp_path)
    assert vol.shape[0] == small_phantom.volume.shape[0]
    assert [s.series_uid for s in vol.other_series] == ["1.2.3.4.5"]
    assert open_volume(tmp_path, series="1.2.3.4.5").shape[0] == 20
    assert open_volume(tmp_path, series="1.2.3.4").shape[0] == 20  # unique prefix
    with pytest.raises(ScanError, match="series '9.9' is not here; series found: "):
        open_volume(tmp_path, series="9.9")


def test_missing_uids_neither_merge_nor_split(small_phantom, tmp_path):
    write_phantom(small_phantom, tmp_path / "a", "dicom")
    _second_series(small_phantom, tmp_path / "b", slices=20)
    for f in (tmp_path / "b").iterdir():
        ds = pydicom.dcmread(f)
        del ds.SeriesInstanceUID
        ds.save_as(f)
    vol = open_volume(tmp_path)
    assert vol.shape[0] == 60
    assert len(vol.other_series) == 1 and vol.other_series[0].files == 20  # not split per file
    assert "no SeriesInstanceUID" in vol.other_series[0].series_uid


def test_non_ct_modality_is_refused_but_ct_chosen_beside_it(small_phantom, tmp_path):
    _second_series(small_phantom, tmp_path / "mr", slices=30, uid="1.2.3.77")
    for f in (tmp_path / "mr").iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    with pytest.raises(ScanError, match="is MR, not CT"):
        open_volume(tmp_path / "mr")
    _second_series(small_phantom, tmp_path / "ct", slices=10, uid="1.2.3.88")
    assert open_volume(tmp_path).series_uid == "1.2.3.88"  # CT preferred over a larger MR


def test_reorients_flipped_and_coronal_volumes(small_phantom, tmp_path):
    vol = small_phantom.volume
    # Same voxels described with x and y running backwards (as NIfTI RAS files often are).
    flipped = CtVolume(hu=np.ascontiguousarray(vol.hu[:, ::-1, ::-1]), spacing_xyz=vol.spacing_xyz,
                       origin_xyz=vol.irc_to_xyz([0, vol.shape[1] - 1, vol.shape[2] - 1]),
                       direction=np.diag([-1.0, -1.0, 1.0]))
    back = open_volume(write_volume(flipped, tmp_path / "flipped.nii.gz"))
    np.testing.assert_array_equal(back.hu, expected_hu(small_phantom))
    np.testing.assert_allclose(back.origin_xyz, vol.origin_xyz, atol=1e-4)
    np.testing.assert_allclose(back.direction, np.eye(3), atol=1e-9)
    assert not back.warnings[1:]  # only the padding note: flips are silent

    # A coronal acquisition: array index runs along y, rows along -z.
    coronal_hu = np.ascontiguousarray(np.transpose(vol.hu, (1, 0, 2))[:, ::-1, :])
    d = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    origin = vol.irc_to_xyz([vol.shape[0] - 1, 0, 0])
    coronal = CtVolume(hu=coronal_hu, spacing_xyz=(vol.spacing_xyz[0], vol.spacing_xyz[2],
                                                   vol.spacing_xyz[1]), origin_xyz=origin, direction=d)
    back = open_volume(write_volume(coronal, tmp_path / "coronal.mhd"))
    assert any("acquired coronal" in w for w in back.warnings)
    np.testing.assert_array_equal(back.hu, expected_hu(small_phantom))
    np.testing.assert_allclose(back.spacing_xyz, vol.spacing_xyz, atol=1e-6)
    np.testing.assert_allclose(back.origin_xyz, vol.origin_xyz, atol=1e-4)


def test_oblique_volume_keeps_its_planes_and_says_so(small_phantom, tmp_path):
    vol = small_phantom.volume
    a = np.radians(20)
    d = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    oblique = CtVolume(hu=vol.hu, spacing_xyz=vol.spacing_xyz, origin_xyz=vol.origin_xyz, direction=d)
    back = open_volume(write_volume(oblique, tmp_path / "oblique.nrrd"))
    np.testing.assert_allclose(back.direction, d, atol=1e-6)
    assert any("oblique orientation (20.0 deg" in w for w in back.warnings)


def test_two_and_four_dimensional_images(tmp_path):
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(tmp_path / "flat.nii"))
    with pytest.raises(ScanError, match="flat.nii: a 2D image"):
        open_volume(tmp_path / "flat.nii")
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkInt16), str(tmp_path / "time.nii.gz"))
    with pytest.raises(ScanError, match="4D data with 3 volumes"):
        open_volume(tmp_path / "time.nii.gz")
    one = sitk.GetImageFromArray(np.full((1, 6, 8, 8), -1000, dtype=np.int16), isVector=False)
    sitk.WriteImage(one, str(tmp_path / "one.nii.gz"))
    assert open_volume(tmp_path / "one.nii.gz").shape == (6, 8, 8)
    rgb = sitk.Image([8, 8, 8], sitk.sitkVectorUInt8, 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(ScanError, match="3 components per voxel"):
        open_volume(tmp_path / "rgb.nrrd")


def test_float_nifti_and_non_hu_values(tmp_path):
    arr = np.full((5, 8, 8), -1000.4, dtype=np.float32)
    arr[2] = 40.6
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "f.nii"))
    vol = open_volume(tmp_path / "f.nii")
    assert vol.hu[2, 0, 0] == 41 and vol.hu[0, 0, 0] == -1000
    sitk.WriteImage(sitk.GetImageFromArray(np.full((5, 8, 8), 100, np.uint8)), str(tmp_path / "mri.nii"))
    assert any("may not be Hounsfield" in w for w in open_volume(tmp_path / "mri.nii").warnings)


def test_folder_with_one_volume_file_opens_it(small_phantom, tmp_path):
    write_phantom(small_phantom, tmp_path, "mhd")
    assert open_volume(tmp_path).shape == small_phantom.volume.shape
    shutil.copy(next(tmp_path.glob("*.mhd")), tmp_path / "copy.mha")
    with pytest.raises(ScanError, match="several volume files"):
        open_volume(tmp_path)


def test_peak_memory_stays_under_two_and_a_half_volumes(tmp_path):
    import tracemalloc

    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1000, size=(80, 256, 256), dtype=np.int16)
    vol = CtVolume(hu=hu, spacing_xyz=(0.7, 0.7, 1.25), origin_xyz=(0, 0, 0))
    write_dicom_series(vol, tmp_path, padding_value=None)
    tracemalloc.start()
    out = open_volume(tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(out.hu, hu)
    assert peak < 2.5 * hu.nbytes, f"peak {peak / hu.nbytes:.2f}x the int16 volume"
