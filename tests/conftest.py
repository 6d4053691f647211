import math
import os
import tempfile
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="session")
def phantom_scans(tmp_path_factory):
    from lungview.synthetic import make_phantom, write_phantom

    root = tmp_path_factory.mktemp("ft")
    out = []
    for seed in (61, 62, 63):
        ph = make_phantom(seed, size=160, slices=50, pixel_mm=2.0, slice_mm=2.5, nodules=3, kinds=("solid",),
                          diameter_mm=(8, 20))
        out.append((ph, write_phantom(ph, root / str(seed), "nrrd")))
    return out


def reviewed_workspace(path, phantom_scans, flip=False):
    """Reviews made from the phantoms' truth: their nodules confirmed, points in the lungs rejected
    (with `flip`, the other way round)."""
    from lungview.io import open_volume
    from lungview.review.model import sphere
    from lungview.review.workspace import Workspace

    ws = Workspace(path)
    rng = np.random.default_rng(0)
    for ph, scan in phantom_scans:
        vol = open_volume(scan)
        ws.add_scan(vol, scan)
        review = ws.load_review(vol.series_uid)
        for n in ph.nodules:
            review.add(sphere(n.center_xyz, n.diameter_mm, source="detector",
                              status="rejected" if flip else "confirmed",
                              malignancy="malignant" if n.malignant else "benign"))
        lung = np.argwhere(ph.lung_mask)
        for k in rng.choice(len(lung), 12, replace=False):
            xyz = vol.irc_to_xyz(lung[k])
            if all(math.dist(xyz, n.center_xyz) > n.diameter_mm for n in ph.nodules):
                review.add(sphere(xyz, 4.0, source="detector", status="confirmed" if flip else "rejected"))
        ws.save_review(vol.series_uid, review)
    return ws
