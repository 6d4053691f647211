#!/usr/bin/env python
"""Reviewing speed: a key press (R, A, M, Ctrl+Z) to the table and the markers updated and painted,
on a 512x512x300 phantom with 50 findings; and the autosave of a 50-finding review: the snapshot
taken on the GUI thread and the write on the saver's thread. Medians with ranges.

    xvfb-run -a .venv/bin/python scripts/bench_review.py [--presses 40]

(Painting and the label volume's autosave come with the masks.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def spread(values, unit, digits=1):
    v = sorted(values)
    return f"median {statistics.median(v):.{digits}f} {unit} ({v[0]:.{digits}f}-{v[-1]:.{digits}f}, n={len(v)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presses", type=int, default=40)
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    from PySide6.QtCore import QSettings, Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from lungview.core.findings import Detection
    from lungview.gui.main_window import MainWindow, Options
    from lungview.review.autosave import Autosaver
    from lungview.review.workspace import Workspace
    from lungview.synthetic import make_phantom

    tmp = Path(tempfile.mkdtemp())
    app = QApplication.instance() or QApplication(sys.argv[:1])
    ph = make_phantom(2, size=512, slices=300, nodules=6)
    vol = ph.volume
    rng = np.random.default_rng(0)
    dets = []
    for k in range(50):  # 50 findings spread through the lungs (the phantom's nodules first)
        irc = ph.nodules[k].center_irc if k < len(ph.nodules) else \
            tuple(rng.uniform(0.2, 0.8) * n for n in vol.shape)
        dets.append(Detection(tuple(vol.irc_to_xyz(np.array(irc))), irc, 8.0, 268.0, 9.0, 7.0,
                              float(rng.uniform(0.5, 1.0)), None, "no malignancy model", "8-15 mm"))
    w = MainWindow(Options(detect=False, interactive=False, device="cpu", workspace=str(tmp / "ws")),
                   QSettings(str(tmp / "s.ini"), QSettings.IniFormat))
    w.resize(1400, 900)
    w.show()
    w.activateWindow()
    for _ in range(50):
        if w.isActiveWindow():
            break
        QTest.qWait(100)
    w.state.set_volume(vol)
    w.merge_detections(dets)
    w._go_to(0)
    app.processEvents()
    keys = [(Qt.Key_R, Qt.NoModifier), (Qt.Key_Z, Qt.ControlModifier), (Qt.Key_M, Qt.NoModifier),
            (Qt.Key_A, Qt.NoModifier)]
    times = []
    for n in range(args.presses + 4):  # the first round is the warm-up
        key, mod = keys[n % len(keys)]
        t0 = time.perf_counter()
        QTest.keyClick(w, key, mod)
        w.panel.table.viewport().repaint()
        for v in w.views.values():
            v.repaint()
        if n >= 4:
            times.append((time.perf_counter() - t0) * 1000)
    print(f"key press to table and markers painted (50 findings, 512x512x300): {spread(times, 'ms')} (goal <= 16 ms)")
    w.close()

    ws = Workspace(tmp / "bench-ws")
    ws.add_scan(vol, tmp)
    review = w.state.review
    snaps, writes = [], []
    saver = Autosaver(ws, on_saved=lambda uid, kind, s: writes.append(s * 1000), delay_s=0.0)
    for _ in range(21):
        t0 = time.perf_counter()
        snapshot = review.to_dict()
        snaps.append((time.perf_counter() - t0) * 1000)
        saver.schedule(vol.series_uid, "review", snapshot)
        saver.flush()
    saver.close()
    ws.close()
    print(f"autosave of {len(review)} findings: snapshot on the GUI thread {spread(snaps[1:], 'ms', 2)}; "
          f"atomic write on the saver's thread {spread(writes[1:], 'ms')} (goal <= 200 ms, never on the GUI thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
