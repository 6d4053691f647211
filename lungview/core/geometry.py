"""Voxel (index, row, col) <-> patient (x, y, z) mm, for any direction matrix.

xyz = D @ (irc[::-1] * spacing) + origin, spacing and origin in (x, y, z) order.
The book's xyz2irc multiplies by D instead of inverting it, which is wrong as soon as D is not
symmetric (rotated scans); here the inverse is solved properly.
"""

from __future__ import annotations

import numpy as np


def _as_points(points) -> tuple[np.ndarray, bool]:
    arr = np.asarray(points, dtype=np.float64)
    single = arr.ndim == 1
    arr = np.atleast_2d(arr)
    if arr.shape[-1] != 3:
        raise ValueError(f"expected points with 3 coordinates, got shape {arr.shape}")
    return arr, single


def irc_to_xyz(irc, origin_xyz, spacing_xyz, direction) -> np.ndarray:
    """Voxel coordinates (index, row, col), one point or (N, 3), to patient mm."""
    pts, single = _as_points(irc)
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    cri = pts[:, ::-1] * np.asarray(spacing_xyz, dtype=np.float64)
    xyz = cri @ d.T + np.asarray(origin_xyz, dtype=np.float64)
    return xyz[0] if single else xyz


def xyz_to_irc(xyz, origin_xyz, spacing_xyz, direction) -> np.ndarray:
    """Patient mm, one point or (N, 3), to continuous voxel coordinates (index, row, col)."""
    pts, single = _as_points(xyz)
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    rel = pts - np.asarray(origin_xyz, dtype=np.float64)
    cri = np.linalg.solve(d, rel.T).T / np.asarray(spacing_xyz, dtype=np.float64)
    irc = cri[:, ::-1]
    return irc[0] if single else irc


def xyz_to_irc_rounded(xyz, origin_xyz, spacing_xyz, direction) -> np.ndarray:
    """Like xyz_to_irc, rounded to the nearest voxel (int64)."""
    return np.rint(xyz_to_irc(xyz, origin_xyz, spacing_xyz, direction)).astype(np.int64)


def orientation_letters(direction) -> str:
    """Three letters (DICOM LPS convention) naming where +col, +row and +index point, e.g. 'LPS'."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    pos, neg = "LPS", "RAI"
    letters = []
    for axis in range(3):
        v = d[:, axis]
        k = int(np.argmax(np.abs(v)))
        letters.append(pos[k] if v[k] > 0 else neg[k])
    return "".join(letters)


def closest_axis_permutation(direction) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For each patient axis x, y, z: which array axis (in x-y-z = col-row-index order) runs
    along it, and whether it runs backwards. Used to reorient scans to the standard axial layout."""
    d = np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3))
    signed = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    order: list[int] = [-1, -1, -1]
    taken: set[int] = set()
    # Greedy on the largest cosines: exact for permutation-like matrices, sensible for oblique ones.
    for flat in np.argsort(-d, axis=None):
        patient_axis, array_axis = divmod(int(flat), 3)
        if order[patient_axis] == -1 and array_axis not in taken:
            order[patient_axis] = array_axis
            taken.add(array_axis)
    flips = tuple(bool(signed[p, order[p]] < 0) for p in range(3))
    return (order[0], order[1], order[2]), flips  # type: ignore[return-value]
