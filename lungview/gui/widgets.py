"""Small widgets of the main window: the notice banner that stays until dismissed, and the
window/level boxes with typed entry."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDockWidget, QDoubleSpinBox, QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from lungview.gui.state import ViewerState

_STYLE = {
    "warning": "background: #4a3a10; color: #ffd27a;",
    "error": "background: #4a1616; color: #ffb0a0;",
    "info": "background: #1c3448; color: #bfe0ff;",
}


class Banner(QFrame):
    """Notices about the scan (reader warnings, not CT-like, interpolated slices) shown above
    the views until the reader dismisses them: progress messages never overwrite them."""

    dismissed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.close_button = QPushButton("Dismiss")
        self.close_button.setFlat(True)
        self.close_button.clicked.connect(self.dismiss)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.close_button, 0, Qt.AlignTop)
        self.notices: list[str] = []
        self.hide()

    def show_notices(self, notices: list[str], level: str = "warning") -> None:
        self.notices = list(notices)
        if not self.notices:
            self.dismiss()
            return
        self.setStyleSheet(f"QFrame {{ {_STYLE[level]} }} QPushButton {{ color: inherit; }}")
        self.text.setText("\n".join(f"⚠ {n}" if level != "info" else n for n in self.notices))
        self.show()

    def add_notice(self, notice: str, level: str = "warning") -> None:
        if notice not in self.notices:
            self.show_notices([*self.notices, notice], level)

    def dismiss(self) -> None:
        self.notices = []
        self.hide()
        self.dismissed.emit()


class WindowLevelBox(QWidget):
    """Centre and width of the grey-level window in HU, typed or shown as they change."""

    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.center = QDoubleSpinBox()
        self.width_box = QDoubleSpinBox()
        for box, (lo, hi), tip in ((self.center, (-2000, 4000), "window centre (level), HU"),
                                   (self.width_box, (1, 6000), "window width, HU")):
            box.setRange(lo, hi)
            box.setDecimals(0)
            box.setSingleStep(10)
            box.setToolTip(tip)
            box.setKeyboardTracking(False)  # apply on Enter or focus change, not per digit
        layout.addWidget(QLabel("W/L"))
        layout.addWidget(self.center)
        layout.addWidget(self.width_box)
        self.center.valueChanged.connect(self._typed)
        self.width_box.valueChanged.connect(self._typed)
        state.window_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        c, w = self.state.window
        for box, value in ((self.center, c), (self.width_box, w)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)

    def _typed(self) -> None:
        self.state.set_window(self.center.value(), self.width_box.value())


def add_dock(window, title: str, widget: QWidget, area, shortcut: str, menu, shown, width: int) -> QDockWidget:
    """A hidden dock holding `widget`, toggled from `menu` and by `shortcut` ("Title panel");
    when shown it takes `width` pixels and `shown()` runs (a refresh)."""
    dock = QDockWidget(title, window)
    dock.setObjectName(title.lower())
    dock.setWidget(widget)
    window.addDockWidget(area, dock)
    dock.hide()
    toggle = dock.toggleViewAction()
    toggle.setText(f"{title} panel")
    toggle.setShortcut(shortcut)
    menu.addAction(toggle)
    window.addAction(toggle)

    def visibility(visible: bool) -> None:
        if visible:
            window.resizeDocks([dock], [width], Qt.Horizontal)
            shown()

    dock.visibilityChanged.connect(visibility)
    return dock
