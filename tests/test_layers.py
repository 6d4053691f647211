"""DESIGN.md's layers: only lungview.gui imports Qt; core imports neither torch nor Qt."""

import subprocess
import sys

import pytest

CHECK = """
import sys, importlib
importlib.import_module({module!r})
bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r} or m in {forbidden!r})
print(','.join(bad))
"""


@pytest.mark.parametrize("module, forbidden", [
    ("lungview.core", ("torch", "PySide6", "pyqtgraph", "SimpleITK", "pydicom")),
    ("lungview.io", ("torch", "PySide6", "pyqtgraph")),
    ("lungview.synthetic", ("torch", "PySide6", "pyqtgraph")),
    ("lungview.cli", ("torch", "PySide6", "pyqtgraph")),
    ("lungview.models", ("PySide6", "pyqtgraph", "SimpleITK", "pydicom")),
    ("lungview.inference.pipeline", ("PySide6", "pyqtgraph")),
    ("lungview.training.demo", ("PySide6", "pyqtgraph")),
    # the review is plain Python below the GUI: no Qt, and no models (the CLI and GUI bring those)
    ("lungview.review.workspace", ("torch", "PySide6", "pyqtgraph", "lungview.inference")),
    ("lungview.review.exchange", ("torch", "PySide6", "pyqtgraph", "lungview.inference")),
    ("lungview.review.autosave", ("torch", "PySide6", "pyqtgraph", "lungview.inference")),
    ("lungview.review.masks", ("torch", "PySide6", "pyqtgraph", "lungview.inference")),
    ("lungview.io.catalog", ("torch", "PySide6", "pyqtgraph")),
    ("lungview.training.finetune", ("PySide6", "pyqtgraph")),
    ("lungview.training.runs", ("PySide6", "pyqtgraph")),
    ("lungview.training.examples", ("torch", "PySide6", "pyqtgraph")),
    ("lungview.models.versions", ("PySide6", "pyqtgraph", "SimpleITK", "pydicom")),
    ("lungview.cli_train", ("torch", "PySide6", "pyqtgraph")),
])
def test_layer_imports(module, forbidden):
    out = subprocess.run([sys.executable, "-c", CHECK.format(module=module, forbidden=set(forbidden))],
                         capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert out == "", f"{module} pulled in {out}"
