import numpy as np
import pytest
import SimpleITK as sitk

from lungview.core import CtVolume, irc_to_xyz, xyz_to_irc, xyz_to_irc_rounded
from lungview.core.geometry import closest_axis_permutation, orientation_letters


def rotation(rng, flip=False):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    if flip:
        q[:, 2] *= -1
    return q


DIRECTIONS = {
    "identity": np.eye(3),
    "flipped_xy": np.diag([-1.0, -1.0, 1.0]),
    "coronal": np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),
    "rotated": rotation(np.random.default_rng(1)),
    "rotated_flipped": rotation(np.random.default_rng(2), flip=True),
}


@pytest.mark.parametrize("name", DIRECTIONS)
def test_matches_simpleitk(name):
    d = DIRECTIONS[name]
    spacing, origin = (0.7, 0.8, 2.5), (-120.0, 33.0, -400.0)
    image = sitk.Image(40, 30, 20, sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(d.ravel()))
    rng = np.random.default_rng(0)
    irc = rng.uniform(0, 20, size=(50, 3))
    xyz = irc_to_xyz(irc, origin, spacing, d)
    for p_irc, p_xyz in zip(irc, xyz):
        ref = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in p_irc[::-1]))
        np.testing.assert_allclose(p_xyz, ref, atol=1e-9)
        back = image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in p_xyz))
        np.testing.assert_allclose(xyz_to_irc(p_xyz, origin, spacing, d), back[::-1], atol=1e-9)
    np.testing.assert_allclose(xyz_to_irc(xyz, origin, spacing, d), irc, atol=1e-9)


def test_book_formula_is_wrong_for_rotations():
    """The book computes irc = (D @ (xyz - origin)) / spacing: right only when D is symmetric."""
    d = DIRECTIONS["rotated"]
    spacing, origin = np.array([0.7, 0.7, 2.5]), np.array([10.0, -5.0, 3.0])
    irc = np.array([12.0, 100.0, 200.0])
    xyz = irc_to_xyz(irc, origin, spacing, d)
    book = ((d @ (xyz - origin)) / spacing)[::-1]
    assert np.abs(book - irc).max() > 1.0
    np.testing.assert_allclose(xyz_to_irc(xyz, origin, spacing, d), irc, atol=1e-9)


def test_rounded_and_single_point_shapes():
    d = np.eye(3)
    xyz = irc_to_xyz([2.4, 3.6, 7.5001], (0, 0, 0), (1, 1, 1), d)
    assert xyz.shape == (3,)
    r = xyz_to_irc_rounded(xyz, (0, 0, 0), (1, 1, 1), d)
    assert r.dtype == np.int64 and r.tolist() == [2, 4, 8]
    many = xyz_to_irc_rounded(np.zeros((5, 3)), (0, 0, 0), (1, 1, 1), d)
    assert many.shape == (5, 3)


def test_orientation_letters_and_permutation():
    assert orientation_letters(np.eye(3)) == "LPS"
    assert orientation_letters(np.diag([-1.0, -1.0, 1.0])) == "RAS"
    order, flips = closest_axis_permutation(DIRECTIONS["coronal"])
    assert order == (0, 2, 1) and flips == (False, False, True)


def test_ctvolume_checks_and_helpers():
    hu = np.zeros((4, 5, 6), dtype=np.int16)
    vol = CtVolume(hu=hu, spacing_xyz=(0.5, 0.5, 2.0), origin_xyz=(1, 2, 3))
    assert vol.shape == (4, 5, 6) and vol.spacing_irc == (2.0, 0.5, 0.5)
    assert vol.voxel_volume_mm3 == pytest.approx(0.5)
    assert vol.contains_irc([3, 4, 5]) and not vol.contains_irc([4, 0, 0])
    np.testing.assert_allclose(vol.xyz_to_irc(vol.irc_to_xyz([1, 2, 3])), [1, 2, 3])
    with pytest.raises(ValueError, match="int16"):
        CtVolume(hu=hu.astype(np.float32), spacing_xyz=(1, 1, 1), origin_xyz=(0, 0, 0))
    with pytest.raises(ValueError, match="3D"):
        CtVolume(hu=hu[0], spacing_xyz=(1, 1, 1), origin_xyz=(0, 0, 0))
