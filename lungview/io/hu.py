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
        self._scratch: dict = {}

    def _buffer(self, name: str, shape, dtype) -> np.ndarray:
        """Scratch arrays reused from slice to slice: fresh ones of this size cost page faults."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._scratch[name] = np.empty(shape, dtype=dtype)
        return buf

    def convert(self, stored: np.ndarray, slope: float, intercept: float,
                padding: tuple[int, int] | None, out: np.ndarray) -> np.ndarray:
        """HU = stored * slope + intercept into `out` (int16); padding and values far below
        air become air."""
        pad_mask = None
        if padding is not None:
            pad_mask = (stored >= padding[0]) & (stored <= padding[1])
        integer = slope == 1.0 and float(intercept).is_integer() and stored.dtype.kind in "iu"
        if integer and not (stored.dtype == np.int16 and intercept == 0):
            lo, hi = (int(stored.min()), int(stored.max())) if stored.size else (0, 0)
            integer = INT16_MIN <= lo + intercept and hi + intercept <= INT16_MAX
        if integer:
            # the common case: integer arithmetic in place, no temporaries
            if stored.ctypes.data != out.ctypes.data:
                out[...] = stored
            if intercept:
                out += np.int16(intercept)
        else:
            hu = stored.astype(np.float32)
            if slope != 1.0:
                hu *= np.float32(slope)
            hu += np.float32(intercept)
            np.rint(hu, out=hu)
            outside = (hu > INT16_MAX) | (hu < INT16_MIN)
            self.clipped += int(np.count_nonzero(outside))
            np.clip(hu, INT16_MIN, INT16_MAX, out=hu)
            out[...] = hu
        low = np.less(out, PADDING_BELOW_HU, out=self._buffer("low", out.shape, bool))
        if pad_mask is not None:
            low |= pad_mask
        n_low = int(np.count_nonzero(low))
        if n_low:
            # out -= (out - AIR) * low: branch-free, several times faster than putmask on
            # scattered masks; (out - AIR) may wrap only where `low` is 0.
            delta = np.subtract(out, np.int16(AIR_HU), out=self._buffer("delta", out.shape, np.int16))
            delta *= low
            out -= delta
            self.padded += n_low
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
    step = 16  # slabs of slices keep the temporaries small
    for k in range(0, values.shape[0], step):
        converter.convert(values[k:k + step], 1.0, 0.0, None, out=out[k:k + step])
    return out, converter.notes(out.size)
