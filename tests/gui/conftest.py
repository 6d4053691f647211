import numpy as np
import pytest

pytest.importorskip("pytestqt")


@pytest.fixture(scope="session")
def gui_scan(tmp_path_factory):
    """A small phantom on disk with nodules big enough to be seen at its resolution."""
    from lungview.synthetic import make_phantom, write_phantom

    ph = make_phantom(12, size=192, slices=64, pixel_mm=1.8, slice_mm=4.0, nodules=3, kinds=("solid",),
                      diameter_mm=(14, 24))
    return write_phantom(ph, tmp_path_factory.mktemp("gui"), "nrrd"), ph


@pytest.fixture
def make_window(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from lungview.gui.main_window import MainWindow, Options

    made = []

    def make(**kw):
        kw.setdefault("interactive", False)
        opts = Options(view3d=False, device="cpu", **kw)
        w = MainWindow(opts, QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
        qtbot.addWidget(w)
        w.resize(1300, 850)
        w.show()
        w.activateWindow()
        qtbot.waitUntil(w.isActiveWindow, timeout=5000)  # window shortcuts need an active window
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
        assert not w.loader.isRunning() and not w.compute.isRunning()


def book_options():
    from tests.conftest import BOOK_MODELS, need_shared
    from tests.models.test_checkpoints import CLS, SEG

    need_shared(BOOK_MODELS)
    return dict(seg_model=str(BOOK_MODELS / SEG), cls_model=str(BOOK_MODELS / CLS))


def center_of(view, irc):
    """Widget pixel of a voxel in a SliceView."""
    from PySide6.QtCore import QPointF

    row, col = view.state.to_plane(view.plane, irc)
    x, y = view._mm(row + 0.5, col + 0.5)
    scene = view.box.mapViewToScene(QPointF(x, y))
    p = view.mapFromScene(scene)
    return p.x(), p.y()


def nearest(values, target):
    return int(np.argmin(np.abs(np.asarray(values) - target)))
