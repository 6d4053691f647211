import pytest

from lungview.inference.evaluate import ScoredDetection as D
from lungview.inference.evaluate import Truth as T
from lungview.inference.evaluate import evaluate, malignancy_auc


def test_hit_rules_differ_between_luna16_and_book():
    truths = [T("a", (0, 0, 0), 10.0)]
    dets = [D("a", (6.0, 0, 0), 0.9)]  # 6 mm away from a 10 mm nodule
    assert evaluate(dets, truths, 1, "luna16").true_positives == 0
    assert evaluate(dets, truths, 1, "book").true_positives == 1


def test_sensitivity_fp_froc_and_cpm():
    truths = [T("a", (0, 0, 0), 10.0), T("b", (50, 50, 50), 8.0)]
    dets = [D("a", (1, 0, 0), 0.95), D("a", (30, 0, 0), 0.9), D("b", (80, 0, 0), 0.6),
            D("b", (50, 51, 50), 0.4), D("a", (0, 1, 0), 0.3)]
    ev = evaluate(dets, truths, scans=2, rule="luna16", threshold=0.5)
    assert (ev.true_positives, ev.false_positives) == (1, 2)
    assert ev.sensitivity == 0.5 and ev.fp_per_scan == 1.0
    # thresholds: 0.95 -> (0 FP, 1/2); 0.9 -> (0.5, 1/2); 0.6 -> (1.0, 1/2); 0.4 -> (1.0, 2/2)
    assert ev.froc[0.125] == 0.5 and ev.froc[1.0] == 1.0 and ev.froc[8.0] == 1.0
    assert ev.cpm == pytest.approx((0.5 * 3 + 1.0 * 4) / 7)


def test_confusion_table_like_the_book():
    truths = [T("a", (0, 0, 0), 10, True), T("a", (40, 0, 0), 10, False), T("a", (90, 0, 0), 10, True)]
    dets = [D("a", (0, 0, 0), 0.9, 0.8), D("a", (40, 0, 0), 0.2, 0.1), D("a", (200, 0, 0), 0.7, 0.3)]
    c = evaluate(dets, truths, 1).confusion
    assert c["malignant"] == {"complete miss": 1, "filtered out": 0, "pred. benign": 0, "pred. malignant": 1}
    assert c["benign"]["filtered out"] == 1
    assert c["non-nodule"]["pred. benign"] == 1
    assert "nodule" not in c


def test_auc():
    assert malignancy_auc([0.9, 0.8, 0.2], [1, 1, 0]) == 1.0
    assert malignancy_auc([0.5, 0.5], [1, 0]) == 0.5
    assert malignancy_auc([0.5], [1]) is None
