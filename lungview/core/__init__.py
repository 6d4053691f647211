"""Plain-numpy core: volumes, geometry, findings, jobs. No torch, no Qt."""

from lungview.core.errors import LungViewError, ScanError
from lungview.core.geometry import irc_to_xyz, xyz_to_irc, xyz_to_irc_rounded
from lungview.core.volume import CtVolume, SeriesSummary

__all__ = [
    "CtVolume",
    "LungViewError",
    "ScanError",
    "SeriesSummary",
    "irc_to_xyz",
    "xyz_to_irc",
    "xyz_to_irc_rounded",
]
