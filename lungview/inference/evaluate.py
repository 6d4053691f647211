"""Scoring detections against annotations exactly as LUNA16's official evaluation script
(noduleCADEvaluationLUNA16.py) does, plus the book's looser hit rule and its confusion table.

LUNA16's rules, restated:
- only the listed scans count (seriesuids.csv); marks and annotations of other scans are ignored;
- per scan, at most `max_marks` marks are kept (the official run uses 100): those with a
  probability strictly above the (max_marks + 1)-th highest;
- a mark hits a nodule when its squared distance to the centre is strictly below the squared
  radius (an annotation with a negative diameter counts as 10 mm);
- several marks on one nodule count once, with the highest probability; the others are neither
  hits nor false positives; a mark on an excluded annotation (annotations_excluded.csv) is ignored;
- the FROC comes from the ROC of (hits with their best probability, false positives), with missed
  nodules counted in the denominator: fps = cumulative FP / scans, sensitivity = cumulative TP /
  nodules at each distinct probability; it is linearly interpolated (np.interp) at 1/8 ... 8 FP
  per scan, and the CPM is the mean of those seven sensitivities;
- the bootstrap resamples scans with replacement and takes the confidence bounds at the sorted
  positions floor(alpha/2 * N) and floor((1 - alpha/2) * N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
RULES = {"luna16": 0.5, "book": 0.7}  # hit when distance < factor * diameter
ROWS = ("non-nodule", "benign", "malignant", "nodule")
DEFAULT_DIAMETER_MM = 10.0  # LUNA16: annotations without a size (diameter -1)
MAX_MARKS = 100  # what LUNA16's official evaluation keeps per scan


@dataclass(frozen=True)
class ScoredDetection:
    scan: str
    center_xyz: tuple[float, float, float]
    p_nodule: float
    p_malignant: float | None = None


@dataclass(frozen=True)
class Truth:
    scan: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float
    malignant: bool | None = None
    excluded: bool = False  # LUNA16's annotations_excluded.csv: marks on it count neither way


@dataclass
class Matching:
    """The outcome of matching one rule over all scans, in the official script's terms."""

    gt: np.ndarray  # 1 for an included nodule, 0 for a false positive
    prob: np.ndarray  # the nodule's best mark (-inf when missed), or the false positive's
    scan: np.ndarray  # index into the scan list, per entry
    best: dict[int, int]  # truth index -> detection index of its best mark
    false_positives: list[int]  # detection indices
    ignored_on_excluded: int = 0
    double_detections: int = 0
    marks: int = 0  # marks kept over the counted scans
    counted: set[int] = field(default_factory=set)  # included truths on the counted scans


@dataclass
class Evaluation:
    rule: str
    threshold: float
    scans: int
    nodules: int
    true_positives: int
    false_positives: int
    sensitivity: float
    fp_per_scan: float
    froc: dict[float, float]
    cpm: float
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    excluded_nodules: int = 0
    marks: int = 0
    max_marks: int = MAX_MARKS
    ignored_on_excluded: int = 0
    double_detections: int = 0
    bootstrap: dict | None = None

    def to_dict(self) -> dict:
        out = {
            "rule": self.rule, "threshold": self.threshold, "scans": self.scans, "nodules": self.nodules,
            "excluded_nodules": self.excluded_nodules, "marks": self.marks, "max_marks": self.max_marks,
            "true_positives": self.true_positives, "false_positives": self.false_positives,
            "sensitivity": round(self.sensitivity, 6), "fp_per_scan": round(self.fp_per_scan, 6),
            "froc": {str(k): round(v, 6) for k, v in self.froc.items()}, "cpm": round(self.cpm, 6),
            "ignored_on_excluded": self.ignored_on_excluded, "double_detections": self.double_detections,
            "confusion": self.confusion,
        }
        if self.bootstrap is not None:
            out["bootstrap"] = self.bootstrap
        return out


def limit_marks(probs: np.ndarray, max_marks: int) -> np.ndarray:
    """Which marks of one scan LUNA16 keeps: with more than `max_marks`, those strictly above
    the (max_marks + 1)-th highest probability (ties at that value all go)."""
    keep = np.ones(len(probs), dtype=bool)
    if max_marks > 0 and len(probs) > max_marks:
        cut = np.sort(probs)[::-1][max_marks]
        keep = probs > cut
    return keep


def match(dets: list[ScoredDetection], truths: list[Truth], scans: list[str], factor: float = 0.5,
          max_marks: int = MAX_MARKS) -> Matching:
    """Match marks to annotations scan by scan, as the official script does."""
    by_scan_det: dict[str, list[int]] = {}
    for j, d in enumerate(dets):
        by_scan_det.setdefault(d.scan, []).append(j)
    by_scan_truth: dict[str, list[int]] = {}
    # Included annotations first, then excluded ones, as the official collectNoduleAnnotations.
    for k in sorted(range(len(truths)), key=lambda k: truths[k].excluded):
        by_scan_truth.setdefault(truths[k].scan, []).append(k)
    gt, prob, where = [], [], []
    best: dict[int, int] = {}
    fps: list[int] = []
    ignored = doubles = marks = 0
    counted: set[int] = set()
    for s, scan in enumerate(dict.fromkeys(scans)):
        idx = np.array(by_scan_det.get(scan, []), dtype=np.int64)
        if idx.size:
            idx = idx[limit_marks(np.array([dets[j].p_nodule for j in idx]), max_marks)]
        marks += idx.size
        pos = np.array([dets[j].center_xyz for j in idx], dtype=np.float64).reshape(-1, 3)
        remaining = np.ones(idx.size, dtype=bool)
        for k in by_scan_truth.get(scan, []):
            t = truths[k]
            diameter = t.diameter_mm if t.diameter_mm >= 0 else DEFAULT_DIAMETER_MM
            d2 = ((pos - np.asarray(t.center_xyz, dtype=np.float64)) ** 2).sum(axis=1)
            hits = np.flatnonzero(d2 < (factor * diameter) ** 2)
            if t.excluded:
                ignored += int(remaining[hits].sum())
                remaining[hits] = False
                continue
            remaining[hits] = False
            counted.add(k)
            gt.append(1)
            where.append(s)
            if hits.size:
                doubles += hits.size - 1
                top = int(idx[hits[np.argmax([dets[idx[h]].p_nodule for h in hits])]])
                best[k] = top
                prob.append(dets[top].p_nodule)
            else:
                prob.append(-np.inf)
        for h in np.flatnonzero(remaining):
            fps.append(int(idx[h]))
            gt.append(0)
            prob.append(dets[idx[h]].p_nodule)
            where.append(s)
    return Matching(np.array(gt, dtype=np.int8), np.array(prob, dtype=np.float64),
                    np.array(where, dtype=np.int64), best, fps, ignored, doubles, marks, counted)


def froc_points(gt: np.ndarray, prob: np.ndarray, scans: int) -> tuple[np.ndarray, np.ndarray]:
    """(false positives per scan, sensitivity) at every distinct probability, from (0, 0):
    the official computeFROC. Missed nodules (probability -inf) count only in the denominator."""
    nodules = int((gt == 1).sum())
    counted = np.isfinite(prob)
    g, p = gt[counted], prob[counted]
    order = np.argsort(-p, kind="stable")
    g, p = g[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(p) != 0), len(p) - 1] if len(p) else np.zeros(0, dtype=np.int64)
    tp = np.cumsum(g == 1)[last] if len(p) else np.zeros(0)
    fp = np.cumsum(g == 0)[last] if len(p) else np.zeros(0)
    fps = np.r_[0.0, fp / max(scans, 1)]
    sens = np.r_[0.0, tp / nodules] if nodules else np.zeros(len(fps))
    return fps, sens


def froc_at(fps: np.ndarray, sens: np.ndarray, rates=FROC_RATES) -> dict[float, float]:
    return {r: float(v) for r, v in zip(rates, np.interp(rates, fps, sens))}


def _bootstrap(m: Matching, n_scans: int, samples: int, seed: int, confidence: float) -> dict:
    """Resample scans with replacement (the official computeFROC_bootstrap); per rate and for the
    CPM: mean and the bounds at the official sorted positions."""
    rng = np.random.default_rng(seed)
    per_scan = [np.flatnonzero(m.scan == s) for s in range(n_scans)]
    values = np.zeros((samples, len(FROC_RATES)))
    for b in range(samples):
        pick = rng.integers(n_scans, size=n_scans)
        rows = np.concatenate([per_scan[s] for s in pick]) if n_scans else np.zeros(0, dtype=np.int64)
        fps, sens = froc_points(m.gt[rows], m.prob[rows], n_scans)
        values[b] = np.interp(FROC_RATES, fps, sens)
    cpms = values.mean(axis=1)
    lo_at = int(math.floor((1.0 - confidence) / 2.0 * samples))
    hi_at = min(samples - 1, int(math.floor((1.0 + confidence) / 2.0 * samples)))

    def summary(v: np.ndarray) -> dict:
        v = np.sort(v)
        return {"mean": round(float(v.mean()), 6), "low": round(float(v[lo_at]), 6),
                "high": round(float(v[hi_at]), 6)}

    return {"samples": samples, "seed": seed, "confidence": confidence,
            "froc": {str(r): summary(values[:, i]) for i, r in enumerate(FROC_RATES)},
            "cpm": summary(cpms)}


def _confusion(dets, truths, m: Matching, threshold: float, malignant_at: float) -> dict:
    """The book's table: rows by truth, columns by what the pipeline did with it."""
    graded = all(d.p_malignant is not None for d in dets)
    columns = ("complete miss", "filtered out") + (("pred. benign", "pred. malignant") if graded
                                                   else ("detected",))
    table = {row: {col: 0 for col in columns} for row in ROWS}

    def column(d: ScoredDetection) -> str:
        if d.p_nodule < threshold:
            return "filtered out"
        if not graded:
            return "detected"
        return "pred. malignant" if d.p_malignant >= malignant_at else "pred. benign"

    for k, t in enumerate(truths):
        if k not in m.counted:
            continue
        row = "nodule" if t.malignant is None else ("malignant" if t.malignant else "benign")
        table[row]["complete miss" if k not in m.best else column(dets[m.best[k]])] += 1
    for j in m.false_positives:
        table["non-nodule"][column(dets[j])] += 1
    if not any(t.malignant is None for t in truths):
        table.pop("nodule")
    return table


def evaluate(dets: list[ScoredDetection], truths: list[Truth], scans: list[str], rule: str = "luna16",
             threshold: float = 0.5, max_marks: int = MAX_MARKS, bootstrap: int = 0, seed: int = 0,
             confidence: float = 0.95, malignant_at: float = 0.5) -> Evaluation:
    """Score `dets` on the scans `scans` (series UIDs) under `rule` ("luna16" or "book")."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}")
    scans = list(dict.fromkeys(scans))
    m = match(dets, truths, scans, RULES[rule], max_marks)
    wanted = set(scans)
    n_scans = max(1, len(scans))
    fps, sens = froc_points(m.gt, m.prob, n_scans)
    curve = froc_at(fps, sens)
    nodules = int((m.gt == 1).sum())
    found = sum(1 for j in m.best.values() if dets[j].p_nodule >= threshold)
    false_pos = sum(1 for j in m.false_positives if dets[j].p_nodule >= threshold)
    return Evaluation(
        rule=rule, threshold=threshold, scans=len(scans), nodules=nodules, true_positives=found,
        false_positives=false_pos, sensitivity=found / nodules if nodules else 0.0,
        fp_per_scan=false_pos / n_scans, froc=curve, cpm=float(np.mean(list(curve.values()))),
        confusion=_confusion(dets, truths, m, threshold, malignant_at),
        excluded_nodules=sum(1 for t in truths if t.excluded and t.scan in wanted), marks=m.marks,
        max_marks=max_marks, ignored_on_excluded=m.ignored_on_excluded,
        double_detections=m.double_detections,
        bootstrap=_bootstrap(m, len(scans), bootstrap, seed, confidence) if bootstrap > 0 else None)


def malignancy_auc(scores, labels) -> float | None:
    """Area under the ROC curve (Mann-Whitney), None without both classes."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))
