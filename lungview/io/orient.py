"""Reorient a volume, by axis permutation and flips only (no resampling), to the standard
axial layout: index runs foot->head (+z), rows run anterior->posterior (+y), cols right->left (+x)."""

from __future__ import annotations

import dataclasses

import numpy as np

from lungview.core import CtVolume
from lungview.core.geometry import closest_axis_permutation

_PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}


def standardize_orientation(vol: CtVolume) -> CtVolume:
    order, flips = closest_axis_permutation(vol.direction)
    if order == (0, 1, 2) and not any(flips):
        _note_oblique(vol)
        return vol
    # order[p]: which old xyz axis runs along patient axis p; numpy axes are reversed (z, y, x).
    hu = np.transpose(vol.hu, (2 - order[2], 2 - order[1], 2 - order[0]))
    for p in range(3):
        if flips[p]:
            hu = np.flip(hu, axis=2 - p)
    size_xyz = vol.hu.shape[::-1]
    corner_xyz = [0, 0, 0]
    for p in range(3):
        if flips[p]:
            corner_xyz[order[p]] = size_xyz[order[p]] - 1
    origin = vol.irc_to_xyz(np.array(corner_xyz[::-1], dtype=np.float64))
    direction = np.column_stack([vol.direction[:, order[p]] * (-1.0 if flips[p] else 1.0)
                                 for p in range(3)])
    spacing = tuple(vol.spacing_xyz[order[p]] for p in range(3))
    warnings = list(vol.warnings)
    if order[2] != 2:
        warnings.append(f"slices were acquired {_PLANES[order[2]]}; reoriented to axial "
                        "(axes permuted, no resampling)")
    interpolated = vol.interpolated_slices
    if interpolated and order[2] == 2 and flips[2]:
        interpolated = tuple(sorted(vol.shape[0] - 1 - k for k in interpolated))
    elif interpolated and order[2] != 2:
        warnings.append(f"{len(interpolated)} interpolated {_PLANES[order[2]]} plane(s): not marked in the axial "
                        "slices")
        interpolated = ()
    out = dataclasses.replace(vol, hu=np.ascontiguousarray(hu), spacing_xyz=spacing, origin_xyz=tuple(origin),
                              direction=direction, warnings=warnings, interpolated_slices=interpolated)
    _note_oblique(out)
    return out


def _note_oblique(vol: CtVolume) -> None:
    cosines = np.clip(np.abs(np.diag(vol.direction)), 0.0, 1.0)
    angle = float(np.degrees(np.arccos(cosines.min())))
    if angle > 1.0:
        vol.warnings.append(f"oblique orientation ({angle:.1f} deg from the patient axes); "
                            "views show the scan's own planes")
