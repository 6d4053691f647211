"""Errors that reach the user as one line (CLI: exit 2, GUI: a dialog)."""

from __future__ import annotations

import os


class LungViewError(Exception):
    """An expected failure with a message fit to show the user as is."""


class ScanError(LungViewError):
    """A scan that cannot be opened; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
