"""The real LIDC-IDRI-0001 scan, read in place from ../shared."""

import numpy as np
import pytest
import SimpleITK as sitk

from lungview.io import open_volume
from lungview.io.annotations import read_annotations
from tests.conftest import LIDC, need_shared


@pytest.fixture(scope="module")
def lidc():
    return open_volume(need_shared(LIDC) / "dicom")


def test_shape_spacing_geometry(lidc):
    assert lidc.shape == (133, 512, 512)
    np.testing.assert_allclose(lidc.spacing_xyz, (0.703125, 0.703125, 2.5))
    np.testing.assert_allclose(lidc.origin_xyz, (-166.0, -171.699997, -340.0), atol=1e-4)
    assert lidc.modality == "CT" and lidc.files == 133
    assert lidc.series_uid == "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
    assert any("padding" in w for w in lidc.warnings)  # -2048 outside the scan circle


def test_matches_simpleitk_with_padding_mapped(lidc):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(LIDC / "dicom")))
    ref = sitk.GetArrayFromImage(reader.Execute()).astype(np.int32)
    ref[ref < -1500] = -1000
    np.testing.assert_array_equal(lidc.hu, ref)


def test_luna16_nodule_lies_in_solid_tissue_inside_the_lung(lidc):
    (ann,) = read_annotations(LIDC / "luna16-annotations.csv")
    assert ann.series_uid == lidc.series_uid
    i, r, c = lidc.xyz_to_irc_rounded(ann.center_xyz)
    core = lidc.hu[i - 1:i + 2, r - 3:r + 4, c - 3:c + 4]
    assert core.mean() > -100, "nodule centre should be soft tissue"
    # Around it, in a square two diameters wide in the same slice: much aerated lung.
    reach = int(ann.diameter_mm / lidc.spacing_xyz[0])
    ring = lidc.hu[i, r - reach:r + reach, c - reach:c + reach]
    assert (ring < -600).mean() > 0.4
