import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the viewer's default workspace lives in the user data directory: never the real one in tests
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="lungview-test-data-")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LIDC = SHARED / "data" / "lidc-idri-0001"
BOOK_MODELS = SHARED / "models" / "book"


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (tests read ../shared in place)")
    return path


@pytest.fixture(scope="session")
def small_phantom():
    """A low-resolution phantom: the same anatomy at 2.8 mm pixels, 5 mm slices."""
    from lungview.synthetic import make_phantom

    return make_phantom(7, size=128, slices=60, pixel_mm=2.8, slice_mm=5.0, nodules=4)


@pytest.fixture(scope="session")
def phantom_dicom(small_phantom, tmp_path_factory):
    from lungview.synthetic import write_phantom

    return write_phantom(small_phantom, tmp_path_factory.mktemp("phantom"), "dicom")


def expected_hu(phantom):
    """What a reader should return for a phantom: padding mapped to air."""
    hu = phantom.volume.hu.copy()
    hu[hu < -1500] = -1000
    return hu
