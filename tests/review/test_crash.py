"""kill -9 at random moments while a workspace is being saved (the review and the masks), 200
times: after each, the workspace opens and holds a state that existed (never a half-written
file, never less than was already on disk)."""

import random
import signal
import subprocess
import sys
import time

import pytest

from lungview.review.workspace import Workspace

CHILD = r"""
import sys
import numpy as np
from lungview.core import CtVolume
from lungview.review import sphere
from lungview.review.workspace import Workspace
ws = Workspace(sys.argv[1])
uid = sys.argv[2]
vol = CtVolume(hu=np.zeros((4, 16, 16), np.int16), spacing_xyz=(1, 1, 1), origin_xyz=(0, 0, 0), series_uid=uid)
review = ws.load_review(uid)
masks = ws.load_masks(uid, vol)
print("ready", len(review), flush=True)
for j in range(len(review)):  # killed between the review's save and the masks': paint what is missing
    if not masks.has(f"2.25.{j + 1}"):
        masks.replace(f"2.25.{j + 1}", tuple(slice(k, k + 1) for k in voxel(j)), np.ones((1, 1, 1), bool))
        ws.save_masks(uid, masks)
while True:
    i = len(review)
    review.add(sphere((float(i), 0.0, 0.0), 5.0, id=f"2.25.{i + 1}", note=str(i) * (i % 50)))
    if i % 2:
        review.set_status(f"2.25.{i}", "confirmed")
    ws.save_review(uid, review)
    v = voxel(i)
    masks.replace(f"2.25.{i + 1}", tuple(slice(k, k + 1) for k in v), np.ones((1, 1, 1), bool))
    ws.save_masks(uid, masks)
"""


def voxel(i):
    """Finding i's mask: one voxel of its own in the 4 x 16 x 16 volume."""
    return i % 4, (i // 4) % 16, (i // 64) % 16


CHILD = "def voxel(i):\n    return i % 4, (i // 4) % 16, (i // 64) % 16\n" + CHILD

UID = "1.2.826.0.1.3680043.10.1416.7"


def existed(review) -> bool:
    """Whether the review is one of the states the child saved: findings 0..k-1 in order, every
    odd-numbered save having confirmed the one before it."""
    n = len(review)
    for j, f in enumerate(review.findings):
        if f.id != f"2.25.{j + 1}" or f.note != str(j) * (j % 50) or f.center_xyz != (float(j), 0.0, 0.0):
            return False
        confirmed_by = j + 1  # save i (odd) confirmed finding i-1
        want = "confirmed" if confirmed_by % 2 == 1 and confirmed_by < n else "unreviewed"
        if f.status != want:
            return False
    return True


@pytest.mark.slow
def test_kill_9_never_leaves_a_workspace_that_does_not_load(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "ws"
    import numpy as np

    from lungview.core import CtVolume

    vol = CtVolume(hu=np.zeros((4, 16, 16), np.int16), spacing_xyz=(1, 1, 1), origin_xyz=(0, 0, 0), series_uid=UID)
    with Workspace(root) as ws:
        ws.add_scan(vol, tmp_path)
    last, last_masked, grew, mid_write = 0, 0, 0, 0
    wait = 0.02  # the longest random wait before a kill; longer after a kill that found no save done (a busy machine)
    for _ in range(200):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), UID], stdout=subprocess.PIPE, text=True)
        line = child.stdout.readline()
        assert line.startswith("ready"), line
        assert int(line.split()[1]) == last  # it read what was last on disk
        time.sleep(rng.uniform(0.0, wait))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        mid_write += any(root.glob("scans/*/.*.tmp"))  # killed between the temporary file and the rename
        ws = Workspace(root, writable=False)
        review = ws.load_review(UID)
        assert existed(review), [f.to_dict() for f in review.findings][-3:]
        assert len(review) >= last
        # the masks, saved after the review: findings 1..m each with its own voxel, m one behind at most
        masks = ws.load_masks(UID, vol)
        masked = sorted(int(fid.split(".")[-1]) for fid in masks.ids.values() if masks.has(fid))
        assert masked == list(range(1, len(masked) + 1)) and len(review) - 1 <= len(masked) <= len(review)
        assert len(masked) >= last_masked
        for j in masked:
            box, crop = masks.mask(f"2.25.{j}")
            assert crop.sum() == 1 and tuple(s.start for s in box) == voxel(j - 1)
        last_masked = len(masked)
        grown = len(review) > last
        grew += grown
        wait = 0.02 if grown else min(0.2, 1.5 * wait)
        last = len(review)
    # the kills did land while saves were going on, some in the middle of writing one
    assert grew >= 100 and mid_write >= 10, (grew, mid_write)
