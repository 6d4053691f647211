#!/usr/bin/env python
"""Reviewing speed on a 512x512x300 phantom with 50 findings: a key press (R, A, M, Ctrl+Z) to the
table and the markers updated and painted; painting with the brush, each mouse move to the mask
drawn in all three views (frames per second); and the autosave of the 50-finding review and of
its 512x512x300 label volume holding a mask for each finding: the snapshot taken on the GUI
thread and the write on the saver's thread. Medians with ranges.

    xvfb-run -a .venv/bin/python scripts/bench_review.py [--presses 40] [--moves 60]
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
    ap.add_argument("--moves", type=int, default=60)
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    from PySide6.QtCore import QPoint, QPointF, QSettings, Qt
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

    # painting: a circle stroke of the 5 mm brush over the first nodule, one mouse move per frame
    w._go_to(0)
    w.state.set_display(paint="brush", brush_mm=5.0)
    axial = w.views["axial"]
    moves = []
    axial.paint.connect(lambda plane, irc, phase: moves.append(phase))
    n0 = ph.nodules[0]
    sr, sc = w.state.plane_spacing("axial")

    def pixel(row, col):
        p = axial.mapFromScene(axial.box.mapViewToScene(QPointF((col + 0.5) * sc, (row + 0.5) * sr)))
        return QPoint(int(p.x()), int(p.y()))

    _, r0, c0 = n0.center_irc
    vp = axial.viewport()
    QTest.mousePress(vp, Qt.LeftButton, Qt.NoModifier, pixel(r0, c0))
    frames = []
    for k in range(args.moves + 5):  # the first 5: warm-up
        angle = 2 * np.pi * k / 40
        QTest.qWait(12)  # a hand's pace: pyqtgraph drops moves closer together than 10 ms
        t0 = time.perf_counter()
        QTest.mouseMove(vp, pixel(r0 + 12 * np.sin(angle), c0 + 12 * np.cos(angle)))
        for v in w.views.values():
            v.repaint()
        if k >= 5:
            frames.append(1000.0 / ((time.perf_counter() - t0) * 1000))
    QTest.mouseRelease(vp, Qt.LeftButton, Qt.NoModifier, pixel(r0, c0))
    masks = w.state.review.masks
    print(f"painting (5 mm brush, 512x512 slices, all three views redrawn): {spread(frames, 'frames/s', 0)} "
          f"(goal >= 30); {moves.count('move')} of {args.moves + 5} moves painted, "
          f"{masks.count(w.state.visible()[0].id)} voxels, one undo step: {w.state.review.undo_name}")
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
    print(f"autosave of {len(review)} findings: snapshot on the GUI thread {spread(snaps[1:], 'ms', 2)}; "
          f"atomic write on the saver's thread {spread(writes[1:], 'ms')} (goal <= 200 ms, never on the GUI thread)")

    # the label volume: a mask for each of the 50 findings, spheres of 5-30 mm
    spacing = np.asarray(vol.spacing_irc)
    for f, d in zip(review.findings, np.linspace(5.0, 30.0, len(review))):
        c = np.rint(vol.xyz_to_irc(np.array(f.center_xyz))).astype(int)
        half = np.ceil(d / 2 / spacing).astype(int)
        box = tuple(slice(max(0, k - h), min(n, k + h + 1)) for k, h, n in zip(c, half, vol.shape))
        grid = np.ogrid[tuple(box)]
        inside = sum(((g - k) * sp) ** 2 for g, k, sp in zip(grid, c, spacing)) <= (d / 2) ** 2
        review.set_mask(f.id, box, inside)
    masks = review.masks
    voxels = int(np.count_nonzero(masks.labels))
    full, after_stroke, writes = [], [], []
    saver = Autosaver(ws, on_saved=lambda uid, kind, s: writes.append(s * 1000), delay_s=0.0)
    first = review.findings[0].id
    for n in range(21):
        masks._packed.clear()  # every label packed again: the first save of a scan
        t0 = time.perf_counter()
        snapshot = masks.snapshot()
        full.append((time.perf_counter() - t0) * 1000)
        saver.schedule(vol.series_uid, "masks", snapshot)
        saver.flush()
        # a stroke changes one label: only that one is packed again
        masks.dab(first, np.array([masks.labels.size // 2 + n]))
        t0 = time.perf_counter()
        masks.snapshot()
        after_stroke.append((time.perf_counter() - t0) * 1000)
    saver.close()
    size = (ws.folder(vol.series_uid) / "masks.npz").stat().st_size
    ws.close()
    print(f"autosave of the 512x512x300 label volume ({len(masks.ids)} masks, {voxels} voxels, "
          f"masks.npz {size / 1e6:.2f} MB): snapshot on the GUI thread, every label {spread(full[1:], 'ms', 2)}, "
          f"after a stroke {spread(after_stroke[1:], 'ms', 2)}; atomic write on the saver's thread "
          f"{spread(writes[1:], 'ms')} (goal <= 200 ms, never on the GUI thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
