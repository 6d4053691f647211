"""Compressed and unusual transfer syntaxes from pydicom's bundled test files decode to the
same pixels as their uncompressed twin."""

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from lungview.io.dicom import read_stored_pixels
from lungview.io.dicom_scan import read_header


def stored(name):
    header = read_header(get_testdata_file(name))
    assert header is not None and header != "no-pixels", name
    return header, read_stored_pixels(header)


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_expb.dcm",
                                  "MR_small_implicit.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_lossless_syntaxes_match_uncompressed(name):
    _, ref = stored("MR_small.dcm")
    header, arr = stored(name)
    np.testing.assert_array_equal(arr, ref)
    # only uncompressed little-endian takes the direct path; the rest go through the decoders
    assert (header.raw_pixels is not None) == (name == "MR_small_implicit.dcm")


def test_jpeg_lossless_process14():
    header, arr = stored("SC_rgb_jpeg_gdcm.dcm")  # JPEG Lossless, first-order prediction
    assert arr.shape == (100, 100, 3) and arr.max() == 255


@pytest.mark.parametrize("name", ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_ct_jpeg2000_decodes(name):
    header, arr = stored(name)
    assert header.modality == "CT" and arr.shape == (512, 512)
    assert arr.std() > 10  # real image content, not zeros


def test_deflate_decodes():
    header, arr = stored("image_dfl.dcm")
    assert arr.shape == (512, 512) and arr.std() > 1
