"""Stored pixel values -> Hounsfield units as int16, with padding mapped to air."""

from __future__ import annotations

import numpy as np

AIR_HU = -1000
# No tissue or air is below about -1024 HU; values far below are scanner padding
# (-2048, -3024, -2000 outside the scan circle), whatever PixelPaddingValue says.
PADDING_BELOW_HU = -1500
INT16_MIN, INT16_MAX = -32768, 32767


class HuConverter:
    """Converts slice after slice into a preallocated int16 array and counts what it changed."""

    def __init__(self) -> None:
        self.padded = 0
        self.clipped = 0

    def convert(self, stored: np.ndarray, slope: float, intercept: float,
                padding: tuple[int, int] | None, out: np.ndarray) -> np.ndarray:
        if padding is not None:
            pad_mask = (stored >= padding[0]) & (stored <= padding[1])
        else:
            pad_mask = None
        if slope == 1.0 and float(intercept).is_integer():
            hu = stored.astype(np.int32)
            hu += int(intercept)
        else:
            hu = stored.astype(np.float32)
            hu *= np.float32(slope)
            hu += np.float32(intercept)
            np.rint(hu, out=hu)
        low = hu < PADDING_BELOW_HU
        if pad_mask is not None:
            low |= pad_mask
        n_low = int(np.count_nonzero(low))
        if n_low:
            hu[low] = AIR_HU
            self.padded += n_low
        if hu.max(initial=0) > INT16_MAX or hu.min(initial=0) < INT16_MIN:
            self.clipped += int(np.count_nonzero((hu > INT16_MAX) | (hu < INT16_MIN)))
            np.clip(hu, INT16_MIN, INT16_MAX, out=hu)
        out[...] = hu
        return out

    def notes(self, total: int) -> list[str]:
        notes = []
        if self.padded:
            notes.append(f"{self.padded} voxels ({100.0 * self.padded / total:.1f}%) of padding "
                         f"outside the scan field mapped to air ({AIR_HU} HU)")
        if self.clipped:
            notes.append(f"{self.clipped} voxels beyond the int16 range were clipped")
        return notes


def to_int16_hu(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """A whole array of HU (any dtype) -> int16 with padding mapped to air (MetaImage, NIfTI...)."""
    converter = HuConverter()
    out = np.empty(values.shape, dtype=np.int16)
    flat_in = values.reshape(values.shape[0], -1) if values.ndim > 1 else values[None]
    flat_out = out.reshape(flat_in.shape)
    for k in range(flat_in.shape[0]):  # slice by slice keeps temporaries small
        converter.convert(flat_in[k], 1.0, 0.0, None, out=flat_out[k])
    return out, converter.notes(out.size)
