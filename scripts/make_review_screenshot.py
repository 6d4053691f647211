#!/usr/bin/env python
"""The README's review screenshot: LIDC-IDRI-0001 detected with the book's models, then read with
the keys as a reader does: the finding on LUNA16's nodule labelled malignant (M M) and confirmed
(A), the rest above the threshold rejected (R), one nodule added (K) where an LIDC reader marked a
small one and its mask painted (B, a click), the confirmed nodule's mask filled from the detector
(G), and the window saved as a picture with the review in progress.

    xvfb-run -a .venv/bin/python scripts/make_review_screenshot.py [--out docs/review-lidc-idri-0001.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SCAN = SHARED / "data/lidc-idri-0001"
SEG = SHARED / "models/book/seg_2020-01-26_19.45.12_w4d3c1-bal_1_nodupe-label_pos-d1_fn8-adam.best.state"
CLS = SHARED / "models/book/cls_2020-02-06_14.16.55_final-nodule-nonnodule.best.state"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs/review-lidc-idri-0001.png")
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from lungview.gui.main_window import MainWindow, Options
    from lungview.io.annotations import read_annotations

    tmp = Path(tempfile.mkdtemp())
    app = QApplication.instance() or QApplication(sys.argv[:1])
    w = MainWindow(Options(seg_model=str(SEG), cls_model=str(CLS), device="cpu", interactive=False,
                           workspace=str(tmp / "ws")), QSettings(str(tmp / "s.ini"), QSettings.IniFormat))
    w.resize(1400, 900)
    w.show()
    app.processEvents()
    w.activateWindow()  # the review keys are window shortcuts: the window must be the active one
    for _ in range(50):
        if w.isActiveWindow():
            break
        QTest.qWait(100)
    loop = QEventLoop()
    result = {}
    w.detection_done.connect(lambda ok: (result.update(ok=ok), loop.quit()))
    w.open_path(str(SCAN / "dicom"))
    loop.exec()
    if not result.get("ok"):
        sys.stderr.write(f"detection failed: {w.message.text()}\n")
        return 1
    (truth,) = read_annotations(SCAN / "luna16-annotations.csv")
    rows = w.state.visible()
    nodule = min(range(len(rows)), key=lambda i: np.linalg.norm(np.subtract(rows[i].center_xyz, truth.center_xyz)))
    w._go_to(nodule)
    QTest.keyClick(w, Qt.Key_M)  # benign, then malignant
    QTest.keyClick(w, Qt.Key_M)
    QTest.keyClick(w, Qt.Key_A)  # confirmed; the next unreviewed one is selected
    for _ in range(len(rows) - 1):  # the rest: rejected, one key each (A and R move on by themselves)
        row = w.selected()
        if row is None or row.status != "unreviewed":
            break
        QTest.keyClick(w, Qt.Key_R)
    # a nodule the reader adds: one that an LIDC reader marked as a point (under 3 mm) and the
    # detector did not report, at the crosshair
    from lungview.io.lidc import read_lidc

    vol = w.state.volume
    small = next(n for n in read_lidc(SCAN / "lidc-reads.xml").nodules if n.small)
    (x, y), z = small.rois[0].points[0], small.rois[0].z_mm
    k = int(round(vol.xyz_to_irc(np.array([vol.origin_xyz[0], vol.origin_xyz[1], z]))[0]))
    w.state.set_cursor((k, y, x))
    QTest.keyClick(w, Qt.Key_K)
    # its mask painted with the brush: B, one click on it, B again to stop painting
    from PySide6.QtCore import QPoint, QPointF

    axial = w.views["axial"]
    sr, sc = w.state.plane_spacing("axial")
    spot = axial.mapFromScene(axial.box.mapViewToScene(QPointF((x + 0.5) * sc, (y + 0.5) * sr)))
    QTest.keyClick(w, Qt.Key_B)
    QTest.mouseClick(axial.viewport(), Qt.LeftButton, Qt.NoModifier, QPoint(int(spot.x()), int(spot.y())))
    QTest.keyClick(w, Qt.Key_B)
    # the confirmed nodule's mask filled from the detector's measurement (G)
    w._go_to(next(i for i, r in enumerate(w.state.visible()) if r.id == rows[nodule].id))
    QTest.keyClick(w, Qt.Key_G)
    QTimer.singleShot(500, loop.quit)
    loop.exec()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    w.screenshot().save(str(args.out))
    reviewed, total = w.state.reviewed_count()
    print(f"{args.out}: {reviewed} of {total} reviewed, scan Lung-RADS {w.state.review.scan_lung_rads()}; "
          f"undo stack top: {w.state.review.undo_name}; masks: "
          + ", ".join(f"{w.state.review.masks.count(f.id)} voxels" for f in w.state.review.findings
                      if w.state.review.masks.has(f.id)))
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
