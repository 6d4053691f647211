"""A corpus of bad input: each gets one clear error naming the file, nothing crashes."""

import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from lungview.core import ScanError
from lungview.io import open_volume


def _corpus(tmp_path, phantom_dicom):
    cases = {}
    (tmp_path / "empty").mkdir()
    cases["empty folder"] = (tmp_path / "empty", "no DICOM images found .*folder is empty")
    (tmp_path / "zero.dcm").write_bytes(b"")
    cases["zero bytes"] = (tmp_path / "zero.dcm", "empty file")
    (tmp_path / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    cases["random bytes"] = (tmp_path / "random.dcm", "not a DICOM file")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image\n")
    (notes / "data.csv").write_text("a,b\n1,2\n")
    cases["non-DICOM files"] = (notes, "no DICOM images found; found 2 file")
    good = sorted(phantom_dicom.iterdir())[0].read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(good[: len(good) // 2])
    trunc = tmp_path / "trunc_series"
    shutil.copytree(phantom_dicom, trunc)
    victim = sorted(trunc.iterdir())[7]
    victim.write_bytes(victim.read_bytes()[:-5000])
    cases["truncated slice in a series"] = (trunc, "000008.dcm: file is truncated")
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(sorted(phantom_dicom.iterdir())[0], single / "one.dcm")
    cases["a 2D image"] = (single, "a single 2D image, not a volume")
    sr = get_testdata_file("test-SR.dcm")
    cases["structured report"] = (sr, "DICOM object without image data")
    rgb = get_testdata_file("SC_rgb_rle.dcm")
    cases["colour image"] = (rgb, "is OT, not CT")
    mr_trunc = get_testdata_file("MR_truncated.dcm")
    cases["pydicom truncated MR"] = (mr_trunc, "is MR, not CT")
    cases["missing file"] = (tmp_path / "nope.mhd", "no such file or folder")
    (tmp_path / "header.mhd").write_text("NDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
                                         "ElementDataFile = header.raw\n")
    cases["mhd without its raw"] = (tmp_path / "header.mhd", "data file 'header.raw' is missing")
    (tmp_path / "junk.nii.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    cases["corrupt nifti"] = (tmp_path / "junk.nii.gz", "not a readable image")
    return cases


def test_every_bad_input_gets_its_clear_error(tmp_path, phantom_dicom):
    for name, (path, pattern) in _corpus(tmp_path, phantom_dicom).items():
        with pytest.raises(ScanError, match=pattern) as info:
            open_volume(path)
        message = str(info.value)
        assert "\n" not in message, name
        assert str(path) in message or str(path.parent if hasattr(path, "parent") else path) in message, name


@pytest.mark.parametrize("name", ["no_meta.dcm", "rtplan_truncated.dcm", "badVR.dcm", "meta_missing_tsyntax.dcm",
                                  "ExplVR_BigEndNoMeta.dcm", "rtstruct.dcm", "UN_sequence.dcm",
                                  "JPEGLSNearLossless_08.dcm"])
def test_pydicom_malformed_files(name):
    try:
        path = get_testdata_file(name)
    except Exception:  # noqa: BLE001
        path = None
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    with pytest.raises(ScanError) as info:
        open_volume(path)
    assert "\n" not in str(info.value)


def test_decoder_failure_names_the_slice(tmp_path, phantom_dicom):
    series = tmp_path / "s"
    shutil.copytree(phantom_dicom, series)
    victim = sorted(series.iterdir())[4]
    ds = pydicom.dcmread(victim)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x01garbage"])
    ds.save_as(victim)
    with pytest.raises(ScanError, match=r"000005\.dcm: cannot decode pixel data"):
        open_volume(series)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "random.dcm"
    bad.write_bytes(b"\x00" * 300)
    proc = subprocess.run([sys.executable, "-m", "lungview", "info", str(bad)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"lungview: error: {bad}: not a DICOM file, nor a "
                                                "supported volume (.mhd .mha .nii .nii.gz .nrrd .nhdr)"]
    assert proc.stdout == ""


def _edit_series(phantom_dicom, folder, edit):
    shutil.copytree(phantom_dicom, folder)
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        edit(ds)
        ds.save_as(f)
    return folder


def test_colour_ct_reaches_its_own_refusal(tmp_path, phantom_dicom):
    def colour(ds):
        grey = ds.pixel_array
        rgb = np.repeat(((grey - grey.min()) // 64).astype(np.uint8)[..., None], 3, axis=2)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = rgb.tobytes()

    folder = _edit_series(phantom_dicom, tmp_path / "rgb", colour)
    assert pydicom.dcmread(next(folder.iterdir())).Modality == "CT"
    with pytest.raises(ScanError, match=r"colour \(multi-sample\) images, not a CT scan") as info:
        open_volume(folder)
    assert str(folder) in str(info.value)


def test_multi_frame_ct_reaches_its_own_refusal(tmp_path, phantom_dicom):
    def frames(ds):
        ds.NumberOfFrames = 2
        ds.PixelData = ds.PixelData * 2

    folder = _edit_series(phantom_dicom, tmp_path / "mf", frames)
    with pytest.raises(ScanError, match="multi-frame \\(enhanced\\) DICOM is not supported") as info:
        open_volume(folder)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize("spacing", [["0", "0"], ["-0.7", "0.7"]])
def test_pixel_spacing_zero_or_negative_names_the_file(tmp_path, phantom_dicom, spacing):
    def bad(ds):
        ds.PixelSpacing = spacing

    folder = _edit_series(phantom_dicom, tmp_path / "px", bad)
    with pytest.raises(ScanError, match="PixelSpacing .* is not positive") as info:
        open_volume(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)
