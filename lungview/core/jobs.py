"""Cooperative cancellation and progress reporting for long computations (no Qt)."""

from __future__ import annotations

import threading
from typing import Callable, Protocol

from lungview.core.errors import LungViewError


class Progress(Protocol):
    def __call__(self, done: int, total: int, message: str = "") -> None: ...


def no_progress(done: int, total: int, message: str = "") -> None:
    """The progress callback for callers that do not watch."""


class Cancelled(LungViewError):
    """Raised inside a computation when its CancelToken is set; nothing partial is returned."""


class CancelToken:
    """A threading.Event with a check that raises. Compute code calls check() after each batch."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")


ProgressCallback = Callable[[int, int, str], None]


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise Cancelled when an optional token is set (readers take cancel=None)."""
    if cancel is not None:
        cancel.check()
