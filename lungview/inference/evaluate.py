"""Scoring detections against annotations: LUNA16's hit rule (within the nodule's radius) and
the book's (closer than 0.7 x the diameter), sensitivity, false positives per scan, FROC at
1/8 ... 8 FP/scan with its CPM, and the book's confusion table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
RULES = {"luna16": 0.5, "book": 0.7}  # hit when distance < factor * diameter
ROWS = ("non-nodule", "benign", "malignant", "nodule")
COLUMNS = ("complete miss", "filtered out", "pred. benign", "pred. malignant")


@dataclass(frozen=True)
class ScoredDetection:
    scan: str
    center_xyz: tuple[float, float, float]
    p_nodule: float
    p_malignant: float = 0.0


@dataclass(frozen=True)
class Truth:
    scan: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float
    malignant: bool | None = None


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

    def to_dict(self) -> dict:
        return {
            "rule": self.rule, "threshold": self.threshold, "scans": self.scans, "nodules": self.nodules,
            "true_positives": self.true_positives, "false_positives": self.false_positives,
            "sensitivity": round(self.sensitivity, 4), "fp_per_scan": round(self.fp_per_scan, 4),
            "froc": {str(k): round(v, 4) for k, v in self.froc.items()}, "cpm": round(self.cpm, 4),
            "confusion": self.confusion,
        }


def _hits(dets: list[ScoredDetection], truths: list[Truth], factor: float) -> np.ndarray:
    """Boolean (detections x truths): detection j hits nodule k (same scan, within the rule)."""
    hit = np.zeros((len(dets), len(truths)), dtype=bool)
    for k, t in enumerate(truths):
        for j, d in enumerate(dets):
            if d.scan == t.scan:
                dist = np.linalg.norm(np.subtract(d.center_xyz, t.center_xyz))
                hit[j, k] = dist < factor * max(t.diameter_mm, 1e-6)
    return hit


def froc_curve(dets, truths, hit, scans: int) -> tuple[dict[float, float], float]:
    """Sensitivity at each FP/scan rate: the best sensitivity among thresholds whose FP/scan
    does not exceed the rate (LUNA16's FROC, without its interpolation between points)."""
    if not truths:
        return {r: 0.0 for r in FROC_RATES}, 0.0
    p = np.array([d.p_nodule for d in dets])
    order = np.argsort(-p, kind="stable")
    found = np.zeros(len(truths), dtype=bool)
    fps = 0
    points = [(0.0, 0.0)]
    for rank, j in enumerate(order):
        if hit[j].any():
            found |= hit[j]
        else:
            fps += 1
        last = rank == len(order) - 1 or p[order[rank + 1]] != p[j]
        if last:  # only at a real threshold (ties go together)
            points.append((fps / scans, found.mean()))
    curve = {}
    for rate in FROC_RATES:
        curve[rate] = max(s for f, s in points if f <= rate)
    return curve, float(np.mean(list(curve.values())))


def evaluate(dets: list[ScoredDetection], truths: list[Truth], scans: int, rule: str = "luna16",
             threshold: float = 0.5, malignant_at: float = 0.5) -> Evaluation:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}")
    scans = max(1, scans)
    hit = _hits(dets, truths, RULES[rule])
    kept = np.array([d.p_nodule >= threshold for d in dets], dtype=bool)
    found = hit[kept].any(axis=0) if kept.any() else np.zeros(len(truths), dtype=bool)
    fp = int((kept & ~hit.any(axis=1)).sum()) if len(dets) else 0
    curve, cpm = froc_curve(dets, truths, hit, scans)
    confusion = {row: {col: 0 for col in COLUMNS} for row in ROWS}
    for k, t in enumerate(truths):
        row = "nodule" if t.malignant is None else ("malignant" if t.malignant else "benign")
        matched = np.flatnonzero(hit[:, k])
        if matched.size == 0:
            confusion[row]["complete miss"] += 1
            continue
        best = max(matched, key=lambda j: dets[j].p_nodule)
        if dets[best].p_nodule < threshold:
            confusion[row]["filtered out"] += 1
        else:
            malignant = dets[best].p_malignant >= malignant_at
            confusion[row]["pred. malignant" if malignant else "pred. benign"] += 1
    for j, d in enumerate(dets):
        if hit[j].any():
            continue
        if d.p_nodule < threshold:
            confusion["non-nodule"]["filtered out"] += 1
        else:
            col = "pred. malignant" if d.p_malignant >= malignant_at else "pred. benign"
            confusion["non-nodule"][col] += 1
    if not any(t.malignant is None for t in truths):
        confusion.pop("nodule")
    return Evaluation(rule=rule, threshold=threshold, scans=scans, nodules=len(truths),
                      true_positives=int(found.sum()), false_positives=fp,
                      sensitivity=float(found.mean()) if truths else 0.0, fp_per_scan=fp / scans,
                      froc=curve, cpm=cpm, confusion=confusion)


def malignancy_auc(scores, labels) -> float | None:
    """Area under the ROC curve (Mann-Whitney), None without both classes."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))
