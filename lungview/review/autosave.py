"""Saving the reader's work off the GUI thread, within a second of each edit.

The caller hands over a snapshot (a plain dict taken on its own thread: the review's findings
are immutable, so taking it is cheap); a saver thread writes the newest snapshot of each
(scan, kind) after a short pause that gathers a burst of edits into one write. Writes are the
workspace's atomic ones. A failed write (a full disk) is reported and retried; nothing queued is
dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from lungview.core import LungViewError
from lungview.review.workspace import Workspace

DELAY_S = 0.2  # a burst of edits within this is one write
RETRY_S = 1.0


class Autosaver:
    def __init__(self, workspace: Workspace, on_error: Callable[[str], None] | None = None,
                 on_saved: Callable[[str, str, float], None] | None = None, delay_s: float = DELAY_S):
        self.workspace = workspace
        self.on_error = on_error
        self.on_saved = on_saved  # (series_uid, kind, seconds the write took)
        self.delay_s = delay_s
        self._pending: dict[tuple[str, str], tuple[object, float]] = {}
        self._busy = False
        self._stop = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="lungview-autosave", daemon=True)
        self._thread.start()

    def schedule(self, series_uid: str, kind: str, snapshot) -> None:
        """`kind`: "review", "view" or "masks", the snapshot a dict (Masks.snapshot for masks)."""
        with self._cv:
            self._pending[(series_uid, kind)] = (snapshot, time.monotonic() + self.delay_s)
            self._cv.notify()

    def _write(self, series_uid: str, kind: str, snapshot) -> None:
        if kind == "review":
            self.workspace.save_review(series_uid, snapshot)
        elif kind == "view":
            self.workspace.save_view(series_uid, snapshot)
        elif kind == "masks":
            self.workspace.save_masks(series_uid, snapshot)
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._due():
                    timeout = None
                    if self._pending:
                        timeout = max(0.0, min(t for _, t in self._pending.values()) - time.monotonic())
                    self._cv.wait(timeout)
                if self._stop and not self._pending:
                    return
                key = min(self._pending, key=lambda k: self._pending[k][1])
                snapshot, _ = self._pending.pop(key)
                self._busy = True
            start = time.perf_counter()
            try:
                self._write(*key, snapshot)
            except (LungViewError, OSError) as exc:
                with self._cv:  # keep it (unless a newer one came) and retry
                    self._pending.setdefault(key, (snapshot, time.monotonic() + RETRY_S))
                if self.on_error:
                    self.on_error(f"could not save: {exc}")
                if self._stop:  # closing: give up after reporting, rather than spin
                    with self._cv:
                        self._pending.clear()
            else:
                if self.on_saved:
                    self.on_saved(key[0], key[1], time.perf_counter() - start)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _due(self) -> bool:
        now = time.monotonic()
        return any(t <= now for _, t in self._pending.values()) or (self._stop and bool(self._pending))

    def flush(self, timeout: float = 10.0) -> bool:
        """Writes everything queued now; True when all of it is on disk."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._pending = {k: (s, 0.0) for k, (s, _) in self._pending.items()}
            self._cv.notify_all()
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Writes what is queued, then stops the thread."""
        done = self.flush(timeout)
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout)
        return done
