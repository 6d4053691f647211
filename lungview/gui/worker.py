"""One long-lived worker thread that owns the compute device: inference (and later training)
jobs queue on it, so they never fight for GPU memory. Jobs are plain callables built on the GUI
thread; they receive a progress callback and a CancelToken, never a Qt object. Results come back
through queued signals, tagged with the job id so the GUI can drop stale ones."""

from __future__ import annotations

import itertools
import queue
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QThread, Signal

from lungview.core import LungViewError
from lungview.core.jobs import Cancelled, CancelToken


@dataclass
class Job:
    """fn(progress, cancel) -> result, run on the worker thread."""

    name: str
    fn: Callable[[Callable[[int, int, str], None], CancelToken], Any]
    id: int = 0
    cancel: CancelToken = field(default_factory=CancelToken)


_IDS = itertools.count(1)  # one numbering for every worker: a job id names one job in the window


class Worker(QThread):
    job_started = Signal(int, str)
    job_progress = Signal(int, int, int, str)  # id, done, total, message
    job_finished = Signal(int, object)
    job_failed = Signal(int, str)  # one line for the user
    job_cancelled = Signal(int)

    _STOP = object()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._queue: queue.Queue = queue.Queue()
        self._current: Job | None = None
        self._lock = threading.Lock()
        self.ran_on: dict[int, int] = {}  # job id -> thread ident, for tests and diagnostics

    def submit(self, name: str, fn) -> Job:
        job = Job(name=name, fn=fn, id=next(_IDS))
        self._queue.put(job)
        return job

    def cancel(self, job_id: int | None = None) -> None:
        """Cancel the running job (or the given one) and any queued job with that id."""
        with self._lock:
            if self._current is not None and (job_id is None or self._current.id == job_id):
                self._current.cancel.cancel()
        if job_id is not None:
            for job in list(self._queue.queue):
                if isinstance(job, Job) and job.id == job_id:
                    job.cancel.cancel()

    def cancel_all(self) -> None:
        for job in list(self._queue.queue):
            if isinstance(job, Job):
                job.cancel.cancel()
        self.cancel()

    def run(self) -> None:  # the worker thread's own loop
        while True:
            job = self._queue.get()
            if job is self._STOP:
                return
            if job.cancel.is_set():
                self.job_cancelled.emit(job.id)
                continue
            with self._lock:
                self._current = job
            self.ran_on[job.id] = threading.get_ident()
            self.job_started.emit(job.id, job.name)
            try:
                result = job.fn(lambda d, t, m="", _id=job.id: self.job_progress.emit(_id, d, t, m), job.cancel)
                if job.cancel.is_set():
                    raise Cancelled("cancelled")
            except Cancelled:
                self.job_cancelled.emit(job.id)
            except LungViewError as exc:
                self.job_failed.emit(job.id, str(exc))
            except Exception as exc:  # noqa: BLE001 - a dialog, never a crash
                traceback.print_exc()
                first = str(exc).splitlines()[0] if str(exc) else ""
                self.job_failed.emit(job.id, f"{job.name} failed: {type(exc).__name__}: {first}")
            else:
                self.job_finished.emit(job.id, result)
            finally:
                with self._lock:
                    self._current = None

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel everything, stop the loop and wait: no thread left running at exit."""
        self.cancel_all()
        self._queue.put(self._STOP)
        return self.wait(timeout_ms)
