"""`lungview [PATH] [--demo] [--screenshot FILE] [model and device options]`: the viewer."""

from __future__ import annotations

import sys
from pathlib import Path


def _demo_volume(progress, cancel):
    from lungview.synthetic import make_phantom

    progress(0, 1, "making the demo phantom")
    ph = make_phantom(seed=1, size=512, slices=150, pixel_mm=0.7, slice_mm=2.0, nodules=5)
    progress(1, 1, "making the demo phantom")
    ph.volume.source = "demo phantom (seed 1)"
    return ph.volume


def run(args) -> int:
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from lungview.gui.main_window import MainWindow, Options

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("LungView")
    from lungview.review.workspace import default_dir

    workspace = args.workspace or (None if args.no_workspace or args.screenshot else str(default_dir()))
    options = Options(seg_model=args.seg_model, cls_model=args.cls_model, mal_model=args.mal_model,
                      device=args.device, backend=args.backend, interactive=not args.screenshot,
                      demo_models=args.demo, allow_gaps=args.allow_gaps, workspace=workspace)
    settings = QSettings("LungView", "LungView")
    window = MainWindow(options, settings)
    window.show()
    status = {"code": 0}

    if args.screenshot:
        out = Path(args.screenshot)

        def finish(ok: bool):
            app.processEvents()
            if ok:
                window.screenshot().save(str(out))
                print(f"screenshot saved to {out} ({window.message.text()})")
            else:  # no markers to show: say why, save nothing
                sys.stderr.write(f"lungview: error: detection failed: {window.message.text()}\n")
                status["code"] = 2
            QTimer.singleShot(0, window.close)

        def loaded(ok: bool):
            if not ok:
                sys.stderr.write(f"lungview: error: {window.message.text()}\n")
                status["code"] = 2
                QTimer.singleShot(0, window.close)

        window.scan_loaded.connect(loaded)
        window.detection_done.connect(lambda ok: QTimer.singleShot(300, lambda: finish(ok)))

    if args.demo:
        window.open_job("demo phantom", _demo_volume)
    elif args.path:
        window.open_path(args.path, args.series)
    elif args.screenshot:
        QTimer.singleShot(500, lambda: (window.screenshot().save(args.screenshot), window.close()))
    app.exec()
    return status["code"]
