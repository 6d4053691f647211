"""Reading scans and exchange formats. Entry point: `open_volume(path, series=None)`."""

from lungview.io.open import open_volume, SUPPORTED_SUFFIXES

__all__ = ["open_volume", "SUPPORTED_SUFFIXES"]
