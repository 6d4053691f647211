"""An independent restatement of LUNA16's official evaluation (noduleCADEvaluationLUNA16.py by
the LUNA16 organisers, evaluateCAD / computeFROC / computeFROC_bootstrap), kept close to the
script's own structure — candidate dictionaries, deletion from a copy, sklearn's roc_curve,
np.interp — so that LungView's vectorised version can be checked against it. Test code only."""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics

RATES = [0.125, 0.25, 0.5, 1, 2, 4, 8]
MIN_PROB = -1000000000.0  # the script's "minimum value of a float" for missed nodules


def compute_froc(gt_list, prob_list, n_images, exclude_list):
    gt_local = [g for g, e in zip(gt_list, exclude_list) if not e]
    prob_local = [p for p, e in zip(prob_list, exclude_list) if not e]
    detected = sum(gt_local)
    lesions = sum(gt_list)
    n_cands = len(prob_local)
    if detected == 0:  # the script would divide 0/0 inside roc_curve; nothing was found
        return np.array([0.0, 1.0]), np.array([0.0, 0.0])
    fpr, tpr, _ = metrics.roc_curve(gt_local, prob_local)
    if sum(gt_list) == len(gt_list):  # no false positives at all
        fps = np.zeros(len(fpr))
    else:
        fps = fpr * (n_cands - detected) / n_images
    sens = (tpr * detected) / lesions
    return fps, sens


def evaluate_cad(series_uids, results, nodules, max_marks=-1):
    """results: list of dicts (seriesuid, coordX.., probability); nodules: {uid: [dict(coordX..,
    diameter_mm, state)]}. Returns the FROC lists as the script builds them."""
    all_cands = {}
    for uid in series_uids:
        cands = {}
        i = 0
        for r in results:
            if r["seriesuid"] == uid:
                cands[i] = r
                i += 1
        if max_marks > 0 and len(cands) > max_marks:
            probs = sorted((float(c["probability"]) for c in cands.values()), reverse=True)
            cut = probs[max_marks]
            kept, n = {}, 0
            for key, c in cands.items():
                if n >= max_marks:
                    break
                if float(c["probability"]) > cut:
                    kept[key] = c
                    n += 1
            cands = kept
        all_cands[uid] = cands
    gt_list, prob_list, divisor, exclude = [], [], [], []
    for uid in series_uids:
        cands = all_cands.get(uid, {})
        left = cands.copy()
        for nod in nodules.get(uid, []):
            diameter = float(nod["diameter_mm"])
            if diameter < 0.0:
                diameter = 10.0
            r2 = (diameter / 2.0) ** 2
            found, matches = False, []
            for key, c in cands.items():
                d = sum((float(nod[k]) - float(c[k])) ** 2 for k in ("coordX", "coordY", "coordZ"))
                if d < r2:
                    if nod["state"] == "Included":
                        found = True
                        matches.append(c)
                        if key in left:
                            del left[key]
                    elif nod["state"] == "Excluded":
                        if key in left:
                            del left[key]
            if nod["state"] == "Included":
                if found:
                    gt_list.append(1.0)
                    prob_list.append(max(float(c["probability"]) for c in matches))
                    exclude.append(False)
                else:
                    gt_list.append(1.0)
                    prob_list.append(MIN_PROB)
                    exclude.append(True)
                divisor.append(uid)
        for c in left.values():
            gt_list.append(0.0)
            prob_list.append(float(c["probability"]))
            divisor.append(uid)
            exclude.append(False)
    return gt_list, prob_list, divisor, exclude


def froc_and_cpm(series_uids, results, nodules, max_marks=-1):
    gt, prob, _, exclude = evaluate_cad(series_uids, results, nodules, max_marks)
    fps, sens = compute_froc(gt, prob, len(series_uids), exclude)
    at = np.interp(RATES, fps, sens)
    return dict(zip(RATES, at)), float(np.mean(at))


def bootstrap(series_uids, results, nodules, picks, max_marks=-1, confidence=0.95):
    """computeFROC_bootstrap with the resampled scan lists given (`picks`: index arrays), and
    the CI of each rate read at the script's sorted positions; the CPM per resampling."""
    gt, prob, divisor, exclude = evaluate_cad(series_uids, results, nodules, max_marks)
    per_scan = {}
    for g, p, d, e in zip(gt, prob, divisor, exclude):
        per_scan.setdefault(d, []).append((g, p, e))
    values = []
    for pick in picks:
        rows = [row for i in pick for row in per_scan.get(series_uids[i], [])]
        if rows:
            fps, sens = compute_froc([r[0] for r in rows], [r[1] for r in rows], len(series_uids),
                                     [r[2] for r in rows])
        else:
            fps, sens = np.array([0.0]), np.array([0.0])
        values.append(np.interp(RATES, fps, sens))
    values = np.array(values)
    pz = (1.0 - confidence) / 2.0

    def bounds(vec):
        vec = np.sort(vec)
        return float(vec[int(math.floor(pz * len(vec)))]), float(vec[int(math.floor((1.0 - pz) * len(vec)))])

    return {r: bounds(values[:, i]) for i, r in enumerate(RATES)}, bounds(values.mean(axis=1))
