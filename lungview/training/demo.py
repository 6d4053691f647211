"""The demo models: segmentation, nodule classifier and malignancy classifier trained on seeded
synthetic phantoms, evaluated on unseen phantoms, saved with model cards. Rerun with
scripts/train_demo_models.py; the same seed gives the same phantoms and the same sampling."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lungview.core.jobs import ProgressCallback, no_progress
from lungview.inference.candidates import find_candidates
from lungview.inference.device import DeviceInfo
from lungview.inference.evaluate import ScoredDetection, Truth, evaluate, malignancy_auc
from lungview.inference.lungmask import lung_mask
from lungview.inference.pipeline import Pipeline
from lungview.inference.segmentation import segment
from lungview.models.checkpoint import (BOOK_CONTEXT, BOOK_CROP_IRC, BOOK_KWARGS, LoadedModel, ModelCard,
                                        load_checkpoint, save_checkpoint)
from lungview.models.nets import LunaModel, UNetWrapper
from lungview.synthetic import Phantom, make_phantom
from lungview.training.loops import train_classifier, train_segmentation
from lungview.training.samples import KnownNodule, cls_sample, seg_sample

EVAL_SEED0 = 100_000  # evaluation phantoms never overlap training seeds


@dataclass
class Recipe:
    seed: int = 0
    train_scans: int = 24
    eval_scans: int = 10
    seg_steps: int = 4000
    cls_steps: int = 500
    mal_steps: int = 300
    mine_scans: int = 12  # training scans whose candidates become hard negatives


def phantom_for(seed: int) -> Phantom:
    """Scanner settings vary with the seed like a mixed clinical archive does."""
    rng = np.random.default_rng([seed, 7])
    slice_mm = float(rng.choice(SLICE_CHOICES_MM))
    return make_phantom(seed, size=512, slices=int(round(280 / slice_mm)), pixel_mm=float(rng.uniform(0.62, 0.78)),
                        slice_mm=slice_mm, nodules=(3, 6), noise_hu=float(rng.uniform(10, 30)))


def known(ph: Phantom) -> list[KnownNodule]:
    return [KnownNodule(np.array(n.center_irc), n.diameter_mm, n.malignant) for n in ph.nodules]


SLICE_CHOICES_MM = (1.25, 2.0, 2.5)


def demo_cards(summary: str = "", negatives: int = 0) -> dict[str, ModelCard]:
    """The demo models' cards: the book's input spec, the phantoms' slice spacings."""
    spacing = (min(SLICE_CHOICES_MM), max(SLICE_CHOICES_MM))
    return {
        "segmentation": ModelCard(name="demo segmentation (phantoms)", role="segmentation",
                                  context_slices=BOOK_CONTEXT, slice_spacing_mm=spacing,
                                  training_data=summary, trained_on_phantoms=True),
        "nodule": ModelCard(name="demo nodule classifier (phantoms)", role="nodule", crop_irc=BOOK_CROP_IRC,
                            slice_spacing_mm=spacing,
                            training_data=summary + f" Negatives: {negatives} segmentation candidates and random lung.",
                            trained_on_phantoms=True),
        "malignancy": ModelCard(name="demo malignancy classifier (phantoms)", role="malignancy",
                                crop_irc=BOOK_CROP_IRC, slice_spacing_mm=spacing, training_data=summary,
                                parent="demo nodule classifier", trained_on_phantoms=True),
    }


class _Data:
    def __init__(self, phantoms: list[Phantom], rng, cards: dict[str, ModelCard]):
        self.phantoms = phantoms
        self.rng = rng
        self.cards = cards
        self.lung_points = []
        for ph in phantoms:
            pts = np.argwhere(ph.lung_mask[:, ::4, ::4]) * np.array([1, 4, 4])
            self.lung_points.append(pts[rng.choice(len(pts), size=min(4000, len(pts)), replace=False)])
        self.negatives: list[list[np.ndarray]] = [[] for _ in phantoms]

    def seg_batch(self, n: int):
        xs, ys = [], []
        for b in range(n):
            k = int(self.rng.integers(len(self.phantoms)))
            ph = self.phantoms[k]
            if b % 2 == 0 and ph.nodules:
                nod = ph.nodules[int(self.rng.integers(len(ph.nodules)))]
                c = np.array(nod.center_irc)
                c[0] += self.rng.uniform(-0.5, 0.5) * nod.diameter_mm / ph.volume.spacing_irc[0]
            else:
                c = self.lung_points[k][int(self.rng.integers(len(self.lung_points[k])))]
            x, y = seg_sample(ph.volume, known(ph), c, self.rng, self.cards["segmentation"])
            xs.append(x)
            ys.append(y)
        return np.stack(xs), np.stack(ys)

    def cls_batch(self, n: int):
        xs, labels = [], []
        for b in range(n):
            k = int(self.rng.integers(len(self.phantoms)))
            ph = self.phantoms[k]
            if b % 2 == 0 and ph.nodules:
                c = ph.nodules[int(self.rng.integers(len(ph.nodules)))].center_irc
                label = 1
            else:
                pool = self.negatives[k]
                use_hard = pool and self.rng.random() < 0.75
                c = pool[int(self.rng.integers(len(pool)))] if use_hard else \
                    self.lung_points[k][int(self.rng.integers(len(self.lung_points[k])))]
                label = 0
            xs.append(cls_sample(ph.volume, c, self.rng, self.cards["nodule"]))
            labels.append(label)
        return np.stack(xs), np.array(labels, dtype=np.int64)

    def mal_batch(self, n: int):
        pools = {True: [], False: []}
        for ph in self.phantoms:
            for nod in ph.nodules:
                pools[nod.malignant].append((ph, nod))
        xs, labels = [], []
        for b in range(n):
            want = b % 2 == 0 and bool(pools[True]) or not pools[False]
            ph, nod = pools[want][int(self.rng.integers(len(pools[want])))]
            xs.append(cls_sample(ph.volume, nod.center_irc, self.rng, self.cards["malignancy"]))
            labels.append(int(want))
        return np.stack(xs), np.array(labels, dtype=np.int64)


def mine_negatives(data: _Data, seg: UNetWrapper, device: DeviceInfo, scans: int) -> int:
    """Candidates of the trained segmentation that are not nodules: vessels and other look-alikes
    the classifier must learn to reject (the book's candidate-based negatives)."""
    total = 0
    for k, ph in enumerate(data.phantoms[:scans]):
        vol = ph.volume
        mask = lung_mask(vol)
        prob = segment(vol, seg, device, mask, card=data.cards["segmentation"]).prob
        truth = np.array([n.center_irc for n in ph.nodules]).reshape(-1, 3) * vol.spacing_irc
        radii = np.array([n.diameter_mm / 2 for n in ph.nodules])
        for c in find_candidates(vol, prob, mask):
            d = np.linalg.norm(truth - c.center_irc * vol.spacing_irc, axis=1)
            if not np.any(d < radii + 2.0):
                data.negatives[k].append(c.center_irc)
                total += 1
    return total


def evaluate_models(seg: LoadedModel, cls: LoadedModel, mal: LoadedModel | None, device: DeviceInfo,
                    seeds, progress: ProgressCallback = no_progress) -> dict:
    """Run the whole pipeline on unseen phantoms; LUNA16 rule, FROC, malignancy AUC."""
    pipeline = Pipeline(seg, cls, device, mal)
    dets, truths, mal_scores, mal_labels = [], [], [], []
    for i, seed in enumerate(seeds):
        ph = phantom_for(seed)
        result = pipeline.run(ph.volume)
        scan = str(seed)
        dets += [ScoredDetection(scan, d.center_xyz, d.p_nodule, d.p_malignant) for d in result.detections]
        truths += [Truth(scan, n.center_xyz, n.diameter_mm, n.malignant) for n in ph.nodules]
        for n in ph.nodules:
            near = [d for d in result.detections
                    if np.linalg.norm(np.subtract(d.center_xyz, n.center_xyz)) < n.diameter_mm / 2]
            if near and mal is not None:
                mal_scores.append(max(near, key=lambda d: d.p_nodule).p_malignant)
                mal_labels.append(n.malignant)
        progress(i + 1, len(seeds), "evaluating on unseen phantoms")
    ev = evaluate(dets, truths, [str(seed) for seed in seeds], "luna16", 0.5, max_marks=0)
    auc = malignancy_auc(mal_scores, mal_labels)
    # plain floats: model cards are read back with torch.load(weights_only=True)
    return {"scans": len(seeds), "nodules": ev.nodules, "sensitivity@0.5": round(float(ev.sensitivity), 3),
            "fp_per_scan@0.5": round(float(ev.fp_per_scan), 2),
            "froc": {str(k): round(float(v), 3) for k, v in ev.froc.items()},
            "cpm": round(float(ev.cpm), 3), "malignancy_auc": None if auc is None else round(float(auc), 3)}


def train_demo_models(out_dir: str | Path, device: DeviceInfo, recipe: Recipe | None = None,
                      progress: ProgressCallback = no_progress, log=print,
                      reuse_seg: str | Path | None = None) -> dict[str, Path]:
    """Each stage draws from its own random stream, so `reuse_seg` (the segmentation checkpoint
    an interrupted run saved) resumes with the same result as a run from scratch."""
    recipe = recipe or Recipe()
    out_dir = Path(out_dir)
    rng = np.random.default_rng([recipe.seed, 1])
    t0 = time.perf_counter()
    phantoms = []
    for i in range(recipe.train_scans):
        phantoms.append(phantom_for(recipe.seed * 1000 + i))
        progress(i + 1, recipe.train_scans, "making training phantoms")
    data = _Data(phantoms, rng, demo_cards())
    n_nod = sum(len(p.nodules) for p in phantoms)
    n_mal = sum(n.malignant for p in phantoms for n in p.nodules)
    log(f"{len(phantoms)} training phantoms, {n_nod} nodules ({n_mal} malignant), "
        f"{time.perf_counter() - t0:.0f} s")
    summary = (f"{recipe.train_scans} seeded synthetic chest phantoms (seeds {recipe.seed * 1000}.."
               f"{recipe.seed * 1000 + recipe.train_scans - 1}; 0.62-0.78 mm pixels, 1.25-2.5 mm slices), "
               f"{n_nod} nodules of five kinds, {n_mal} malignant. NOT real CT.")

    if reuse_seg is not None:
        seg = load_checkpoint(reuse_seg, "segmentation").module
        log(f"segmentation reused from {reuse_seg}")
    else:
        torch.manual_seed(recipe.seed)
        data.rng = np.random.default_rng([recipe.seed, 2])
        seg = UNetWrapper(**BOOK_KWARGS["UNetWrapper"])
        train_segmentation(seg, data.seg_batch, recipe.seg_steps, device, progress=progress)
        partial = dataclasses.replace(data.cards["segmentation"], name="demo segmentation (unevaluated)")
        save_checkpoint(out_dir / "seg_demo.partial.pt", seg, partial, BOOK_KWARGS["UNetWrapper"])
        log(f"segmentation trained, {time.perf_counter() - t0:.0f} s")
    n_neg = mine_negatives(data, seg, device, recipe.mine_scans)
    log(f"{n_neg} hard negatives mined, {time.perf_counter() - t0:.0f} s")

    torch.manual_seed(recipe.seed + 1)
    data.rng = np.random.default_rng([recipe.seed, 3])
    cls = LunaModel(**BOOK_KWARGS["LunaModel"])
    train_classifier(cls, data.cls_batch, recipe.cls_steps, device, progress=progress, label="nodule")
    log(f"nodule classifier trained, {time.perf_counter() - t0:.0f} s")
    torch.manual_seed(recipe.seed + 2)
    data.rng = np.random.default_rng([recipe.seed, 4])
    mal = LunaModel(**BOOK_KWARGS["LunaModel"])
    mal.load_state_dict(cls.state_dict())  # as the book: start malignancy from the nodule model
    train_classifier(mal, data.mal_batch, recipe.mal_steps, device, lr=5e-4, progress=progress,
                     label="malignancy")
    log(f"malignancy classifier trained, {time.perf_counter() - t0:.0f} s")

    cards = demo_cards(summary, n_neg)
    loaded = {role: LoadedModel(m, cards[role], "(in memory)", "", "lungview")
              for role, m in (("segmentation", seg), ("nodule", cls), ("malignancy", mal))}
    seeds = [EVAL_SEED0 + recipe.seed * 1000 + i for i in range(recipe.eval_scans)]
    metrics = evaluate_models(loaded["segmentation"], loaded["nodule"], loaded["malignancy"], device, seeds,
                              progress)
    log(f"evaluation on {len(seeds)} unseen phantoms: {metrics}, {time.perf_counter() - t0:.0f} s")
    paths = {}
    for role, name, module in (("segmentation", "seg_demo.pt", seg), ("nodule", "cls_demo.pt", cls),
                               ("malignancy", "mal_demo.pt", mal)):
        cards[role].metrics = dict(metrics, evaluated_on=f"phantom seeds {seeds[0]}..{seeds[-1]}")
        kwargs = BOOK_KWARGS[type(module).__name__]
        paths[role] = save_checkpoint(out_dir / name, module.cpu(), cards[role], kwargs)
    (out_dir / "seg_demo.partial.pt").unlink(missing_ok=True)
    return paths
