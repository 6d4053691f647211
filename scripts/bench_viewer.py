#!/usr/bin/env python
"""Viewer speed, under a real X server (run with: xvfb-run -a .venv/bin/python scripts/bench_viewer.py).

1. time from choosing a 300-slice DICOM series to the first slice on screen (goal <= 1 s);
2. slice scrolling with markers and the segmentation overlay in all three views (goal >= 60 fps);
3. GUI event-loop latency while detection runs on the worker (goal p95 <= 50 ms);
4. time to build the 3D view (lung surface and nodule spheres; goal <= 2 s).
The scan is a seeded 512x512x300 phantom; detection uses the shipped demo models on the CPU.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
REPEAT = 3


def main() -> int:
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from lungview.gui.main_window import MainWindow, Options
    from lungview.io.write import write_dicom_series
    from lungview.synthetic import make_phantom

    app = QApplication(sys.argv[:1])
    tmp = Path(tempfile.mkdtemp())
    ph = make_phantom(5, size=512, slices=300, pixel_mm=0.7, slice_mm=1.0)
    write_dicom_series(ph.volume, tmp / "dicom")
    settings = QSettings(str(tmp / "settings.ini"), QSettings.IniFormat)
    w = MainWindow(Options(interactive=False, detect=False, device="cpu", demo_models=True,
                           view3d="--no-3d" not in sys.argv), settings)
    w.resize(1600, 1000)
    w.show()
    app.processEvents()

    def wait(signal, timeout_ms=600000):
        loop = QEventLoop()
        got = []
        signal.connect(lambda *a: (got.append(a), loop.quit()))
        QTimer.singleShot(timeout_ms, loop.quit)
        loop.exec()
        return got[0] if got else None

    def spread(values, unit, digits=2):
        return (f"median {statistics.median(values):.{digits}f} {unit} "
                f"({min(values):.{digits}f}-{max(values):.{digits}f}, {len(values)} runs)")

    # 1. choose -> first slice on screen, --repeat times
    firsts = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        w.open_path(tmp / "dicom")
        wait(w.scan_loaded)
        w.views["axial"].repaint()
        firsts.append(time.perf_counter() - t0)
    print(f"open 300-slice DICOM series -> first slice shown: {spread(firsts, 's')} (goal <= 1 s)")

    # 3. event-loop latency while detection runs
    lateness = []
    timer = QElapsedTimer()
    tick = QTimer()
    tick.setInterval(10)
    last = [0]

    def on_tick():
        now = timer.elapsed()
        if last[0]:
            lateness.append(max(0, now - last[0] - 10))
        last[0] = now

    tick.timeout.connect(on_tick)
    timer.start()
    tick.start()
    t0 = time.perf_counter()
    w.run_detection()
    ok = wait(w.detection_done)
    tick.stop()
    detect_s = time.perf_counter() - t0
    lateness.sort()
    p95 = lateness[int(0.95 * (len(lateness) - 1))] if lateness else float("nan")
    print(f"detection on the worker: {detect_s:.1f} s ({'done' if ok and ok[0] else 'failed'}), "
          f"{len(w.state.findings.detections)} candidates")
    print(f"event-loop lateness while detecting: median {statistics.median(lateness):.0f} ms, "
          f"p95 {p95:.0f} ms, max {max(lateness):.0f} ms over {len(lateness)} ticks (goal p95 <= 50 ms)")

    # 4. 3D view build time (happened when the findings arrived)
    print(f"3D view built in {getattr(w.view3d.gl, 'build_seconds', float('nan')) if w.view3d.gl else float('nan'):.2f} s (goal <= 2 s)")

    # 2. scrolling with overlays and markers in all three views
    w.state.set_threshold(0.0)
    w.state.set_overlay(visible=True)
    if w.state.findings.detections:
        w.state.set_cursor(w.state.findings.detections[0].center_irc)
    app.processEvents()
    rates = []
    for _ in range(REPEAT):
        frames = 0
        t0 = time.perf_counter()
        for plane in ("axial", "coronal", "sagittal"):
            for k in range(60):
                w.state.step(plane, 1 if k < 30 else -1)
                for v in w.views.values():
                    v.repaint()
                frames += 1
        rates.append(frames / (time.perf_counter() - t0))
    print(f"scrolling with markers and overlay, all three views repainted per step: {spread(rates, 'frames/s', 0)} "
          f"(goal >= 60)")
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
