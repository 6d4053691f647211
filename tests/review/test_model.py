"""The review: every edit undoable to the exact earlier state, decisions never overwritten by a
detection run, detector findings only rejected."""

import math

import pytest

from lungview.core import LungViewError
from lungview.core.findings import Detection
from lungview.review import Review, sphere
from lungview.review.model import DETECTOR, Finding


def det(x, diameter=8.0, p=0.9, p_mal=0.2):
    return Detection(center_xyz=(x, 0.0, 0.0), center_irc=(0, 0, x), diameter_mm=diameter, volume_mm3=1.0,
                     long_axis_mm=diameter + 1, short_axis_mm=diameter - 1, p_nodule=p, p_malignant=p_mal,
                     malignancy_source="model", size_category="")


def snapshot(r: Review):
    return [f.to_dict() for f in r.findings]


def test_every_edit_undoes_and_redoes_exactly():
    r = Review("1.2.3")
    r.merge_detections([det(0.0), det(50.0), det(100.0)])
    a, b, c = (f.id for f in r.findings)
    states = [snapshot(r)]
    r.set_status(a, "confirmed"); states.append(snapshot(r))
    r.cycle(a, "type"); states.append(snapshot(r))
    r.cycle(a, "malignancy"); states.append(snapshot(r))
    r.set_status(b, "rejected"); states.append(snapshot(r))
    r.move(c, (101.0, 2.0, -3.0)); states.append(snapshot(r))
    r.resize(c, 12.0); states.append(snapshot(r))
    user = r.add(sphere((20.0, 20.0, 20.0), 6.0)); states.append(snapshot(r))
    r.update(user.id, "Edit note", note="missed by the detector", rating=4); states.append(snapshot(r))
    r.remove(user.id); states.append(snapshot(r))
    names = []
    for expected in reversed(states[:-1]):
        names.append(r.undo())
        assert snapshot(r) == expected
    assert r.undo() is not None and r.findings == []  # the detection run itself is a step
    assert r.undo() is None
    assert names == ["Delete nodule", "Edit note", "Add nodule", "Resize nodule", "Move nodule",
                     "Reject nodule", "Set malignancy to benign", "Set type to part-solid", "Confirm nodule"]
    r.redo()
    for expected in states[1:]:
        r.redo()
        assert snapshot(r) == expected
    assert r.redo() is None


def test_a_new_edit_clears_redo_and_a_no_op_adds_no_step():
    r = Review()
    f = r.add(sphere((0, 0, 0), 5.0))
    r.set_status(f.id, "confirmed")
    r.undo()
    assert r.redo_name == "Confirm nodule"
    r.set_status(f.id, "unsure")
    assert r.redo_name is None
    r.set_status(f.id, "unsure")  # already unsure
    assert r.undo() == "Mark unsure" and r.undo() == "Add nodule"


def test_detector_findings_are_rejected_not_deleted():
    r = Review()
    r.merge_detections([det(0.0)])
    (f,) = r.findings
    with pytest.raises(LungViewError, match="only rejected"):
        r.remove(f.id)
    assert f.source == DETECTOR and len(r) == 1


def test_rerunning_detection_keeps_decisions_and_the_readers_geometry():
    r = Review()
    r.merge_detections([det(0.0, p=0.9), det(50.0, p=0.8)])
    a, b = (f.id for f in r.findings)
    r.set_status(a, "confirmed")
    r.cycle(a, "malignancy")
    r.move(b, (52.0, 1.0, 0.0))  # the reader moved it: the centre is hers now
    # the new run: a moved slightly with a new probability, b again, and one new candidate
    matched, added = r.merge_detections([det(1.0, p=0.7, p_mal=0.6), det(50.5, p=0.95), det(200.0, p=0.4)])
    assert (matched, added) == (2, 1)
    fa, fb, fc = r.findings
    assert (fa.id, fb.id) == (a, b)
    assert fa.status == "confirmed" and fa.malignancy == "benign"  # decisions untouched
    assert fa.p_nodule == 0.7 and fa.p_malignant == 0.6 and fa.center_xyz == (1.0, 0.0, 0.0)  # machine fields new
    assert fb.center_xyz == (52.0, 1.0, 0.0) and fb.p_nodule == 0.95
    assert fc.status == "unreviewed" and fc.source == DETECTOR
    assert r.undo() == "Detection results" and len(r) == 2 and r.get(a).p_nodule == 0.9


def test_reviewed_count_next_unreviewed_and_scan_category():
    r = Review()
    r.merge_detections([det(x) for x in (0.0, 40.0, 80.0, 120.0)])
    ids = [f.id for f in r.findings]
    assert r.reviewed() == (0, 4)
    r.set_status(ids[0], "confirmed")
    r.set_status(ids[2], "rejected")
    assert r.reviewed() == (2, 4)
    assert r.next_unreviewed(ids[0]) == ids[1]
    assert r.next_unreviewed(ids[3]) == ids[1]  # wraps round
    assert r.next_unreviewed(ids[0], order=[ids[3], ids[2], ids[1], ids[0]]) == ids[3]  # the table's order
    # det(x): 9 x 7 mm, mean 8.0: solid 4A once confirmed
    assert r.get(ids[0]).lung_rads == "4A" and r.get(ids[1]).lung_rads is None
    assert r.scan_lung_rads() == "4A"
    r.update(ids[0], "Set type", type="ground-glass")
    assert r.scan_lung_rads() == "2"


def test_round_trip_and_refusals():
    r = Review("1.2.3")
    r.merge_detections([det(0.0)])
    f = r.add(sphere((1.0, 2.0, 3.0), 7.0, rating=5, note="é"))
    back = Review.from_dict(r.to_dict())
    assert back.findings == r.findings and back.series_uid == "1.2.3"
    with pytest.raises(ValueError, match="status 'maybe'"):
        r.update(f.id, "x", status="maybe")
    with pytest.raises(ValueError, match="rating 6"):
        r.update(f.id, "x", rating=6)
    with pytest.raises(ValueError, match="finite"):
        Finding.from_dict({**f.to_dict(), "center_xyz": [0, math.nan, 0]})
    assert r.get(f.id).rating == 5  # a refused edit changes nothing


def test_listeners_hear_of_an_undo_after_it_can_be_redone():
    """The Edit menu names the next undo and redo when it is told of a change."""
    r = Review("1.2")
    f = r.add(sphere((0.0, 0.0, 0.0), 6.0))
    heard = []
    r.subscribe(lambda ids: heard.append((r.undo_name, r.redo_name)))
    r.set_status(f.id, "confirmed")
    r.undo()
    r.redo()
    assert heard == [("Confirm nodule", None), ("Add nodule", "Confirm nodule"), ("Confirm nodule", None)]


def test_a_rerun_says_what_it_changed():
    r = Review("1.2")
    r.merge_detections([det(0.0, p=0.9), det(50.0, p=0.6)])
    first, second = r.findings
    changes = {}
    r.merge_detections([det(0.5, p=0.2), det(100.0, p=0.7)], changes=changes)
    (new,) = [f for f in r.findings if f.center_xyz[0] == 100.0]
    assert changes == {"added": [new.id], "matched": {first.id: (0.9, 0.2)}, "gone": [second.id]}
