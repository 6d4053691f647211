import numpy as np
import pytest

from lungview.inference.evaluate import ScoredDetection as D
from lungview.inference.evaluate import Truth as T
from lungview.inference.evaluate import evaluate, limit_marks, malignancy_auc
from tests.inference import luna16_reference as ref


def hand_case(with_excluded=True):
    """Three scans; c has no marks at all. Worked out by hand below."""
    truths = [T("a", (0, 0, 0), 10.0), T("b", (50, 50, 50), 8.0), T("c", (0, 0, 0), 6.0)]
    if with_excluded:
        truths.append(T("a", (100, 0, 0), -1.0, excluded=True))  # no size: counts as 10 mm
    dets = [D("a", (1, 0, 0), 0.95),  # hits the 10 mm nodule
            D("a", (0, 1, 0), 0.3),  # a second hit on it: neither TP nor FP
            D("a", (30, 0, 0), 0.9),  # FP
            D("a", (101, 0, 0), 0.8),  # on the excluded annotation: ignored
            D("a", (5, 0, 0), 0.7),  # exactly on the radius: not a hit (strictly within), FP
            D("b", (80, 0, 0), 0.6),  # FP
            D("b", (50, 51, 50), 0.4)]  # hits the 8 mm nodule
    return dets, truths


def test_official_rules_worked_by_hand():
    dets, truths = hand_case()
    ev = evaluate(dets, truths, ["a", "b", "c"])
    # Entries: nodules 0.95 and 0.4 (the third missed), FPs 0.9, 0.7, 0.6 over 3 scans.
    # ROC points (FP/scan, sens): (0,0) (0,1/3) (1/3,1/3) (2/3,1/3) (1,1/3) (1,2/3)
    third, two_thirds = 1 / 3, 2 / 3
    assert ev.froc == pytest.approx({0.125: third, 0.25: third, 0.5: third, 1.0: two_thirds,
                                     2.0: two_thirds, 4.0: two_thirds, 8.0: two_thirds})
    assert ev.cpm == pytest.approx(11 / 21)
    assert (ev.nodules, ev.scans, ev.excluded_nodules) == (3, 3, 1)
    assert (ev.ignored_on_excluded, ev.double_detections) == (1, 1)
    assert (ev.true_positives, ev.false_positives) == (1, 3)  # at p >= 0.5
    assert ev.sensitivity == pytest.approx(third) and ev.fp_per_scan == pytest.approx(1.0)


def test_without_the_excluded_list_the_mark_is_a_false_positive():
    dets, truths = hand_case(with_excluded=False)
    ev = evaluate(dets, truths, ["a", "b", "c"])
    # FPs 0.9, 0.8, 0.7, 0.6: (0,1/3) (1/3) (2/3) (1) (4/3, 1/3) then (4/3, 2/3)
    assert ev.froc[1.0] == pytest.approx(1 / 3) and ev.froc[2.0] == pytest.approx(2 / 3)
    assert ev.false_positives == 4


def test_interpolation_between_points():
    # one scan, one nodule found at 0.5 after 3 FPs above it: points (0,0) (3,0) (3,1)
    dets = [D("a", (0, 0, 0), 0.5)] + [D("a", (50 + 10 * i, 0, 0), 0.9 - 0.1 * i) for i in range(3)]
    ev = evaluate(dets, [T("a", (0, 0, 0), 10.0)], ["a"])
    assert ev.froc[2.0] == 0.0 and ev.froc[4.0] == 1.0
    # two scans halve the rate: (0,0) (1.5,0) (1.5,1)
    ev2 = evaluate(dets, [T("a", (0, 0, 0), 10.0)], ["a", "z"])
    assert ev2.froc[1.0] == 0.0 and ev2.froc[2.0] == 1.0
    # a diagonal step: FP and TP at the same probability -> (0,0) (1, 1): interpolated in between
    tie = [D("a", (0, 0, 0), 0.7), D("a", (40, 0, 0), 0.7)]
    ev3 = evaluate(tie, [T("a", (0, 0, 0), 10.0)], ["a"])
    assert ev3.froc[0.5] == pytest.approx(0.5) and ev3.froc[0.125] == pytest.approx(0.125)


def test_only_the_listed_scans_count():
    dets, truths = hand_case()
    ev = evaluate(dets, truths, ["a"])
    assert ev.nodules == 1 and ev.scans == 1 and ev.false_positives == 2


def test_max_marks_keeps_those_above_the_next_probability():
    assert limit_marks(np.array([0.9, 0.8, 0.8, 0.7, 0.1]), 2).tolist() == [True, False, False, False, False]
    assert limit_marks(np.array([0.9, 0.8, 0.7]), 3).all()
    assert limit_marks(np.array([0.9, 0.8, 0.7]), 0).all()


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    uids = [f"1.2.3.{seed}.{k}" for k in range(int(rng.integers(3, 12)))]
    truths, dets = [], []
    for uid in uids:
        for _ in range(int(rng.integers(0, 4))):
            c = rng.uniform(-150, 150, 3)
            excluded = rng.random() < 0.25
            d = -1.0 if excluded and rng.random() < 0.5 else float(rng.uniform(3, 30))
            truths.append(T(uid, tuple(c), d, excluded=excluded))
            for _ in range(int(rng.integers(0, 3))):  # marks near it, some inside its radius
                dets.append(D(uid, tuple(c + rng.normal(scale=max(d, 6) / 5, size=3)),
                              float(rng.uniform(0.2, 1.0))))
        for _ in range(int(rng.integers(0, 25))):  # false positives, mostly less probable; ties
            dets.append(D(uid, tuple(rng.uniform(-150, 150, 3)), float(np.round(rng.random() ** 4, 2))))
    dets.append(D("not-listed", (0, 0, 0), 0.99))
    return uids, dets, truths


def as_reference(dets, truths):
    results = [{"seriesuid": d.scan, "coordX": d.center_xyz[0], "coordY": d.center_xyz[1],
                "coordZ": d.center_xyz[2], "probability": d.p_nodule} for d in dets]
    nodules = {}
    for t in sorted(truths, key=lambda t: t.excluded):
        nodules.setdefault(t.scan, []).append({"coordX": t.center_xyz[0], "coordY": t.center_xyz[1],
                                               "coordZ": t.center_xyz[2], "diameter_mm": t.diameter_mm,
                                               "state": "Excluded" if t.excluded else "Included"})
    return results, nodules


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_a_restatement_of_the_official_script(seed):
    uids, dets, truths = random_case(seed)
    results, nodules = as_reference(dets, truths)
    max_marks = [0, 100, 8][seed % 3]
    froc, cpm = ref.froc_and_cpm(uids, results, nodules, max_marks if max_marks else -1)
    ev = evaluate(dets, truths, uids, max_marks=max_marks)
    assert ev.cpm == pytest.approx(cpm, abs=1e-9)
    assert [ev.froc[r] for r in ref.RATES] == pytest.approx([froc[r] for r in ref.RATES], abs=1e-9)


def test_bootstrap_agrees_with_the_official_resampling():
    uids, dets, truths = random_case(5)
    results, nodules = as_reference(dets, truths)
    samples = 200
    rng = np.random.default_rng(11)  # the same resamplings LungView draws with seed 11
    picks = [rng.integers(len(uids), size=len(uids)) for _ in range(samples)]
    per_rate, cpm_bounds = ref.bootstrap(uids, results, nodules, picks, max_marks=100)
    ev = evaluate(dets, truths, uids, bootstrap=samples, seed=11)
    b = ev.bootstrap
    assert b["samples"] == samples and b["seed"] == 11
    for r in ref.RATES:
        got = b["froc"][str(float(r))]
        assert (got["low"], got["high"]) == pytest.approx(per_rate[r], abs=1e-6)
    assert (b["cpm"]["low"], b["cpm"]["high"]) == pytest.approx(cpm_bounds, abs=1e-6)
    assert b["cpm"]["low"] <= ev.cpm + 0.05 and b["cpm"]["low"] <= b["cpm"]["high"]


def test_hit_rules_differ_between_luna16_and_book():
    truths = [T("a", (0, 0, 0), 10.0)]
    dets = [D("a", (6.0, 0, 0), 0.9)]  # 6 mm away from a 10 mm nodule
    assert evaluate(dets, truths, ["a"], "luna16").true_positives == 0
    assert evaluate(dets, truths, ["a"], "book").true_positives == 1


def test_confusion_table_like_the_book():
    truths = [T("a", (0, 0, 0), 10, True), T("a", (40, 0, 0), 10, False), T("a", (90, 0, 0), 10, True)]
    dets = [D("a", (0, 0, 0), 0.9, 0.8), D("a", (40, 0, 0), 0.2, 0.1), D("a", (200, 0, 0), 0.7, 0.3)]
    c = evaluate(dets, truths, ["a"]).confusion
    assert c["malignant"] == {"complete miss": 1, "filtered out": 0, "pred. benign": 0, "pred. malignant": 1}
    assert c["benign"]["filtered out"] == 1
    assert c["non-nodule"]["pred. benign"] == 1
    assert "nodule" not in c
    # without malignancy scores the table says only whether a nodule was detected
    plain = evaluate([D("a", (0, 0, 0), 0.9)], truths, ["a"]).confusion
    assert plain["malignant"] == {"complete miss": 1, "filtered out": 0, "detected": 1}


def test_auc():
    assert malignancy_auc([0.9, 0.8, 0.2], [1, 1, 0]) == 1.0
    assert malignancy_auc([0.5, 0.5], [1, 0]) == 0.5
    assert malignancy_auc([0.5], [1]) is None
