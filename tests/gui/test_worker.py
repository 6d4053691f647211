import threading
import time

import pytest

pytest.importorskip("pytestqt")

from lungview.core import LungViewError  # noqa: E402
from lungview.gui.worker import Worker  # noqa: E402


@pytest.fixture
def worker(qtbot):
    w = Worker()
    w.start()
    yield w
    assert w.shutdown()
    assert not w.isRunning()


def test_jobs_run_on_the_worker_thread_in_order(qtbot, worker):
    done = []
    worker.job_finished.connect(lambda jid, result: done.append((jid, result)))
    gui_thread = threading.get_ident()
    a = worker.submit("a", lambda progress, cancel: threading.get_ident())
    b = worker.submit("b", lambda progress, cancel: "second")
    qtbot.waitUntil(lambda: len(done) == 2, timeout=5000)
    assert [d[0] for d in done] == [a.id, b.id]
    assert done[0][1] != gui_thread and worker.ran_on[a.id] == done[0][1]


def test_progress_and_cancellation(qtbot, worker):
    progress, cancelled, finished = [], [], []
    worker.job_progress.connect(lambda jid, d, t, m: progress.append(d))
    worker.job_cancelled.connect(cancelled.append)
    worker.job_finished.connect(lambda jid, r: finished.append(jid))

    def slow(report, cancel):
        for i in range(200):
            report(i, 200, "step")
            cancel.check()
            time.sleep(0.01)
        return "never"

    job = worker.submit("slow", slow)
    qtbot.waitUntil(lambda: len(progress) > 3, timeout=5000)
    worker.cancel(job.id)
    qtbot.waitUntil(lambda: cancelled == [job.id], timeout=5000)
    assert finished == [] and max(progress) < 199


def test_errors_become_one_line_messages(qtbot, worker):
    failed = []
    worker.job_failed.connect(lambda jid, msg: failed.append(msg))

    def bad(report, cancel):
        raise LungViewError("scan.dcm: not a DICOM file")

    def crash(report, cancel):
        raise ZeroDivisionError("division by zero")

    worker.submit("bad", bad)
    worker.submit("crash", crash)
    qtbot.waitUntil(lambda: len(failed) == 2, timeout=5000)
    assert failed[0] == "scan.dcm: not a DICOM file"
    assert failed[1] == "crash failed: ZeroDivisionError: division by zero"


def test_shutdown_cancels_a_running_job(qtbot):
    w = Worker()
    w.start()
    started = threading.Event()

    def forever(report, cancel):
        started.set()
        while True:
            cancel.check()
            time.sleep(0.005)

    w.submit("forever", forever)
    assert started.wait(5)
    assert w.shutdown(5000) and not w.isRunning()
