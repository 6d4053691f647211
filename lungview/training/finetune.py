"""Fine-tuning, the recipes: training examples (see training.examples) cut into crops by
inference's own code, the book's recipes (balanced batches, its optimizers; the augmentation the
parent learned with: the book's for its checkpoints), the parent model scored beside the new one
on the validation scans, and a verdict. training.runs turns a source (a workspace, LUNA16) into a
run of this and a registered model.

Plain Python (no Qt): `lungview train` and the viewer's training panel drive the same code.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from lungview.core import LungViewError
from lungview.core.jobs import CancelToken, ProgressCallback, no_progress
from lungview.inference.classify import classifier_input
from lungview.inference.device import DeviceInfo, autocast_gpu
from lungview.inference.evaluate import ScoredDetection, Truth, evaluate, malignancy_auc
from lungview.inference.grid import model_slice_spacing, resample_z
from lungview.models.checkpoint import LoadedModel
from lungview.training.augment import BOOK_AUGMENTATION, EXACT_AUGMENTATION, augment, augment2d, augment_exact
from lungview.training.examples import Example, TrainingData
from lungview.training.slabs import SEG_CROP, SlabStore, by_scan, cut_slabs

if TYPE_CHECKING:
    from lungview.training.runs import RunState

SEG_DRAWS = 4  # an epoch of the U-Net: this many crops of each training example
NO_VALIDATION = "no validation scan: no comparison is possible; activate it only by choice"


# -- crops ----------------------------------------------------------------------------------
def model_view(vol, card):
    """The scan as the model sees it: resampled along z when the card's slice spacing asks."""
    target = model_slice_spacing(vol.spacing_xyz[2], [card.slice_spacing_mm])
    return vol if target is None else resample_z(vol, target)


def crops_of(examples: list[Example], open_scan, card, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, *crop) float32 classifier inputs, cut by inference's own function from the scan as the
    model sees it (`margin` voxels wider on every side), and (N,) labels. `open_scan(uid)` gives a
    scan's CtVolume."""
    xs, ys = [], []
    for uid, ex in by_scan(examples).items():
        work = model_view(open_scan(uid), card)
        for e in ex:
            xs.append(classifier_input(work.hu, work.xyz_to_irc(np.asarray(e.center_xyz)), card, margin))
            ys.append(e.label)
    shape = (0, *(n + 2 * margin for n in card.crop))
    return (np.stack(xs) if xs else np.zeros(shape, np.float32)), np.array(ys, dtype=np.int64)


def dice(pred: np.ndarray, target: np.ndarray) -> float | None:
    """Dice of the prediction thresholded at 0.5 against the target, over all pixels; None
    without a marked pixel in either."""
    p, t = pred >= 0.5, target >= 0.5
    total = int(p.sum() + t.sum())
    return None if total == 0 else float(2 * (p & t).sum() / total)


def _predict(model: torch.nn.Module, x: np.ndarray, device: DeviceInfo, batch: int, forward) -> list:
    """`forward(model, batch tensor)` over `x` in batches, as inference runs models (bf16 on GPUs)."""
    model = model.to(device.device).eval()
    out = []
    with torch.inference_mode():
        for k in range(0, len(x), batch):
            with autocast_gpu(device):
                out.append(forward(model, torch.from_numpy(x[k:k + batch]).to(device.device)).float().cpu().numpy())
    return out


def _seg_predict(model, x: np.ndarray, device: DeviceInfo, batch: int = 32) -> np.ndarray:
    out = _predict(model, x, device, batch, lambda m, t: m(t))
    return np.concatenate(out) if out else np.zeros((0, 1, SEG_CROP, SEG_CROP), np.float32)


# -- evaluation and verdict -------------------------------------------------------------------
def scores(model: torch.nn.Module, x: np.ndarray, device: DeviceInfo, batch: int = 64) -> np.ndarray:
    """p(class 1) for crops (N, D, H, W), as inference computes it."""
    out = _predict(model, x, device, batch, lambda m, t: m(t[:, None])[1][:, 1])
    return np.concatenate(out) if out else np.zeros(0)


def evaluate_on(examples: list[Example], p: np.ndarray, role: str, threshold: float = 0.5) -> dict:
    """Nodule: each example a mark at its centre, the positives the truths (sensitivity, false
    positives per scan at `threshold`, CPM by LUNA16's definition); malignancy: AUC."""
    labels = np.array([e.label for e in examples])
    if role == "malignancy":
        auc = malignancy_auc(p, labels)
        return {"auc": auc, "examples": len(examples), "malignant": int(labels.sum()),
                "benign": int(len(labels) - labels.sum())}
    scans = sorted({e.scan for e in examples})
    dets = [ScoredDetection(e.scan, e.center_xyz, float(q)) for e, q in zip(examples, p)]
    truths = [Truth(e.scan, e.center_xyz, max(e.diameter_mm, 3.0)) for e in examples if e.label == 1]
    ev = evaluate(dets, truths, scans, threshold=threshold)
    return {"sensitivity": ev.sensitivity, "fp_per_scan": ev.fp_per_scan, "cpm": ev.cpm,
            "true_positives": ev.true_positives, "false_positives": ev.false_positives,
            "nodules": ev.nodules, "scans": ev.scans}


def working_threshold(p: np.ndarray, labels: np.ndarray, p_parent: np.ndarray, parent_threshold: float) -> float:
    """A fine-tuned nodule classifier's own working threshold, from its validation examples
    (scores `p`, the parent's `p_parent`, `labels`): no more false positives than the parent has
    at its threshold, and as many nodules as that allows, the threshold half-way, in log-odds,
    between the highest negative it must leave out and the lowest of those nodules (to 0.01
    where that stays between them). A fine-tune on a few scans pushes the nodules it learned
    towards 1 and leaves look-alikes about where they were, so its best threshold is not the
    parent's (bench_finetune.py (a)). The parent's threshold when no nodule scores above that
    negative."""
    p, labels, p_parent = (np.asarray(a, dtype=np.float64) for a in (p, labels, p_parent))
    allowed = int(((labels == 0) & (p_parent >= parent_threshold)).sum())  # the parent's false positives
    negatives = np.sort(p[labels == 0])[::-1]
    eps = 1e-6  # (float32 probabilities reach 0 and 1)
    hi = float(np.clip(negatives[allowed], eps, 1 - eps)) if allowed < len(negatives) else eps
    found = p[(labels == 1) & (p > hi)]
    if not found.size:
        return float(parent_threshold)
    lo = float(np.clip(found.min(), eps, 1 - eps))
    mid = 1.0 / (1.0 + math.exp(-(math.log(lo / (1 - lo)) + math.log(hi / (1 - hi))) / 2.0))
    rounded = round(mid, 2)
    return rounded if hi < rounded <= lo else mid


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the standard error of an AUC from that many positives and negatives."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) \
        / max(1, positives * negatives)
    return float(math.sqrt(max(0.0, var)))


def verdict(before: dict, after: dict, role: str) -> tuple[str, str]:
    """accepted / refused, and why. Refused when worse than the parent beyond the noise of that
    many examples: a nodule fewer found, or more false positives at equal or lower sensitivity
    (each at its working threshold, where `before` and `after` name one);
    an AUC lower by more than its standard error; a Dice lower by more than 0.01. Without a
    validation scan (`before` empty), refused: no comparison is possible."""
    if not before:
        return "refused", NO_VALIDATION
    if role == "segmentation":
        if before.get("dice") is None or after.get("dice") is None:
            return "refused", "the validation scans hold no mask: no comparison possible"
        if after["dice"] < before["dice"] - 0.01:
            return "refused", f"lower Dice on the validation scans: {after['dice']:.3f} against {before['dice']:.3f}"
        return "accepted", f"Dice {after['dice']:.3f} against the parent's {before['dice']:.3f}"
    if role == "malignancy":
        if before.get("auc") is None or after.get("auc") is None:
            return "refused", "the validation scans lack benign or malignant examples: no comparison possible"
        noise = auc_standard_error(before["auc"], before["malignant"], before["benign"])
        if after["auc"] < before["auc"] - noise:
            return "refused", (f"lower AUC on the validation scans: {after['auc']:.3f} against {before['auc']:.3f} "
                               f"(more than its standard error {noise:.3f} with {before['malignant']} malignant "
                               f"and {before['benign']} benign)")
        return "accepted", f"AUC {after['auc']:.3f} against the parent's {before['auc']:.3f} (± {noise:.3f})"
    at = {k: f" at p ≥ {d['threshold']:.2f}" if "threshold" in d else "" for k, d in (("b", before), ("a", after))}
    if after["true_positives"] < before["true_positives"]:
        return "refused", (f"lower sensitivity: {after['true_positives']} of {after['nodules']} nodules found{at['a']}, "
                           f"the parent found {before['true_positives']}{at['b']}")
    if after["false_positives"] > before["false_positives"]:
        return "refused", (f"more false positives at equal sensitivity: {after['false_positives']}{at['a']} against "
                           f"{before['false_positives']}{at['b']} on {after['scans']} scan(s)")
    return "accepted", (f"{after['true_positives']} of {after['nodules']} nodules found{at['a']} (parent "
                        f"{before['true_positives']}{at['b']}), {after['false_positives']} false positives (parent "
                        f"{before['false_positives']}) on {after['scans']} validation scan(s)")


# -- the recipe ---------------------------------------------------------------------------------
BOOK_LR = {"nodule": 0.001, "malignancy": 0.003,  # p2ch14 initOptimizer: SGD, 0.003 when fine-tuning
           "segmentation": 0.001}  # p2ch13: Adam with its default rate


@dataclass
class Settings:
    epochs: int = 5
    lr: float | None = None  # the book's: BOOK_LR of the role
    momentum: float = 0.0  # the book's chapter 14 SGD has none
    weight_decay: float = 1e-4
    batch: int = 32
    steps_per_epoch: int | None = None  # default: enough to see every training example about twice
    seed: int = 0
    augmentation: str = "parent"  # classifiers: the parent's (augmentation_of), "book" or "exact"


def augmentation_of(card, choice: str = "parent") -> dict:
    """The classifier augmentation a fine-tune uses: by default the one its parent learned with,
    as its card says: a fine-tuned model's recipe records it; the demo models (trained on
    phantoms) learned with the exact one; the book's checkpoints with the book's. Moving a
    model to crops augmented otherwise costs it what it knew (measured, bench_finetune.py (a):
    the demo classifier fine-tuned with the book's interpolating augmentation at a noisier site
    ranked nodules worse than before, with the exact one better)."""
    if choice == "book":
        return BOOK_AUGMENTATION
    if choice == "exact":
        return EXACT_AUGMENTATION
    if choice != "parent":
        raise LungViewError(f"unknown augmentation {choice!r}: parent, book or exact")
    if card.recipe.get("augmentation") and card.role != "segmentation":
        return dict(card.recipe["augmentation"])
    return EXACT_AUGMENTATION if card.trained_on_phantoms else BOOK_AUGMENTATION


@dataclass
class Result:
    model: torch.nn.Module
    history: list[dict]  # per epoch: loss, validation metric
    before: dict
    after: dict
    verdict: str
    reason: str
    counts: dict
    seconds: float
    settings: dict
    working_threshold: float | None = None  # nodule: the fine-tuned model's own (working_threshold)


def _batch_norms(model: torch.nn.Module) -> list:
    """Batch norms keep the statistics the parent learned on its whole training set: a few
    dozen balanced, augmented crops would replace them with their own (and cost the parent's
    calibration on real candidates). Their scale and shift still learn."""
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _trainable(model: torch.nn.Module, role: str):
    """(parameters that learn, modules kept frozen). Malignancy, as the book's chapter 14 does
    it: only the head and the last block learn; the rest keeps its weights and its batch-norm
    statistics."""
    if role != "malignancy":
        return list(model.parameters()), []
    frozen = [model.tail_batchnorm, model.block1, model.block2, model.block3]
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad], frozen


def _epochs(model: torch.nn.Module, frozen: list, opt, steps: int, s: "Settings", step_loss, validate,
            progress: ProgressCallback, cancel: CancelToken | None, on_epoch, state: "RunState | None" = None,
            rng: np.random.Generator | None = None) -> list[dict]:
    """The training loop both recipes share: per epoch `steps` optimizer steps on `step_loss()`
    (frozen modules and every batch norm in eval mode), progress and cancellation after each,
    then `validate(model)` (None: no validation) and `on_epoch(record)`. With `state`, the run
    first continues from its last finished epoch (weights, optimizer, `rng`, curves) and keeps
    them after each epoch."""
    module = getattr(model, "module", model)  # (the model itself under DistributedDataParallel)
    start, history = state.restore(module, opt, rng) if state else (0, [])
    history = list(history)
    total = s.epochs * steps
    for epoch in range(start, s.epochs):
        model.train()
        for m in frozen + _batch_norms(model):
            m.eval()
        losses = []
        for step in range(steps):
            loss = step_loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            progress(epoch * steps + step + 1, total, f"epoch {epoch + 1}/{s.epochs}, loss {np.mean(losses):.3f}")
            if cancel is not None:
                cancel.check()
        model.eval()
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
        if validate is not None:
            record["validation"] = validate(model)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if state is not None:
            state.save(epoch + 1, module, opt, rng, history)
    return history


def _result(model: torch.nn.Module, history: list[dict], before: dict | None, data: TrainingData, s: "Settings",
            t0: float, after: dict | None = None, threshold: float | None = None) -> Result:
    after = after or history[-1].get("validation") or {}
    v, why = verdict(before or {}, after, data.role)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return Result(model, history, before or {}, after, v, why, data.counts(), time.perf_counter() - t0, asdict(s),
                  threshold)


def finetune(data: TrainingData, parent: LoadedModel, open_scan, device: DeviceInfo,
             settings: Settings | None = None, progress: ProgressCallback = no_progress,
             cancel: CancelToken | None = None, on_epoch=None, crops=None, state: "RunState | None" = None,
             slabs=None) -> Result:
    """Fine-tunes a copy of `parent` on the training scans' examples with its augmentation
    (augmentation_of) and batches balanced between the two classes; evaluates parent and child on
    the validation scans in the same run. Seeded: the same data and seed give the same weights on
    the CPU. In a process group (training.distributed) each process trains on its share of the
    same global batch under DistributedDataParallel, and process 0 alone validates.
    `on_epoch(record)` after each epoch (the panel's curves). `crops(examples, margin)` gives
    the classifiers' crops and labels (default: cut now by crops_of; training.cache reads them
    from disk), `slabs(examples)` the U-Net's (training.slabs). With `state`, the run's progress
    is kept after each epoch and, resuming, restored. Cancel raises Cancelled: nothing else is written here."""
    s = settings or Settings()
    if data.role == "segmentation":
        return _finetune_segmentation(data, parent, open_scan, device, s, progress, cancel, on_epoch, slabs, state)
    t0 = time.perf_counter()
    card = parent.card
    train, val = data.examples_on("train"), data.examples_on("validation")
    if not any(e.label == 1 for e in train) or not any(e.label == 0 for e in train):
        raise LungViewError(f"the training scans need examples of both classes for {data.role} "
                            f"({sum(e.label for e in train)} positive, {sum(1 - e.label for e in train)} negative)")
    progress(0, 1, "cutting crops")
    aug = augmentation_of(card, s.augmentation)
    exact = "shift_voxels" in aug
    crops = crops or (lambda ex, margin: crops_of(ex, open_scan, card, margin))
    x_train, y_train = crops(train, int(aug["shift_voxels"]) if exact else 0)
    x_val, _ = crops(val, 0)
    if cancel is not None:
        cancel.check()
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    cpu = device.device.type == "cpu"
    # on CPUs fp32 channels-last-3d trains 2.6x faster than the default layout (loops.train_classifier)
    model = copy.deepcopy(parent.module).to(device.device, memory_format=torch.channels_last_3d if cpu
                                            else torch.preserve_format)
    params, frozen = _trainable(model, data.role)
    s = replace(s, lr=s.lr or BOOK_LR[data.role])
    opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    net, rank, share = _parallel(model, device, s.batch)
    parent_t = parent.card.threshold
    last: dict[str, np.ndarray] = {}  # the scores of the latest validation (the working threshold's)

    def validate_at_parent_threshold(m):
        last["p"] = scores(getattr(m, "module", m), x_val, device)
        return evaluate_on(val, last["p"], data.role, parent_t)

    validate = validate_at_parent_threshold if val and rank == 0 else None
    p_parent = scores(parent.module, x_val, device) if validate else None
    before = evaluate_on(val, p_parent, data.role, parent_t) if validate else None
    pos, neg = np.flatnonzero(y_train == 1), np.flatnonzero(y_train == 0)
    steps = s.steps_per_epoch or max(4, math.ceil(2 * max(len(pos), len(neg)) / s.batch))

    def step_loss():
        half = s.batch // 2
        pick = np.concatenate([rng.choice(pos, half), rng.choice(neg, s.batch - half)])
        if exact:
            x = torch.from_numpy(augment_exact(x_train[pick], rng, aug)[share])[:, None].to(device.device)
        else:
            x = augment(torch.from_numpy(x_train[pick])[:, None].to(device.device), rng, aug)[share]
        if cpu:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        y = torch.from_numpy(y_train[pick][share]).to(device.device)
        with autocast_gpu(device):
            logits, _ = net(x)
        return F.cross_entropy(logits.float(), y)

    history = _epochs(net, frozen, opt, steps, s, step_loss, validate, progress, cancel, on_epoch, state, rng)
    threshold, after = None, None
    if data.role == "nodule" and before:  # its own working threshold, and the before/after at each one's
        labels = np.array([e.label for e in val])
        # the last epoch's validation scored this very model (a resumed run whose epochs were all done did not)
        p_child = last["p"] if "p" in last else scores(model, x_val, device)
        threshold = working_threshold(p_child, labels, p_parent, parent_t)
        before = {**before, "threshold": parent_t}
        after = {**evaluate_on(val, p_child, data.role, threshold), "threshold": threshold}
    return _result(model, history, before, data, s, t0, after, threshold)


def _parallel(model: torch.nn.Module, device: DeviceInfo, batch: int):
    """(the module to train, this process's rank, its share of a global batch): the model itself
    in one process; in a process group, the model under DistributedDataParallel (gradients
    averaged over the processes) and this process's share of each batch all of them draw alike:
    every size-th example from its rank on, so that each process's share of a balanced batch (its
    positives first, then its negatives) is balanced too. This stands in for a DistributedSampler,
    which would give each process its own shard and its own draws: with one global batch drawn
    from one seed, N processes reach the weights of one process (tested)."""
    from lungview.training.distributed import rank_and_size

    rank, size = rank_and_size()
    if size == 1:
        return model, 0, slice(None)
    if batch % size:
        raise LungViewError(f"a batch of {batch} does not split evenly over {size} processes")
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.device.index] if device.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids), rank, slice(rank, None, size)


def _finetune_segmentation(data: TrainingData, parent: LoadedModel, open_scan, device: DeviceInfo, s: Settings,
                           progress: ProgressCallback, cancel: CancelToken | None, on_epoch, slabs=None,
                           state: "RunState | None" = None) -> Result:
    """The U-Net on the book's 64 x 64 crops around masked nodules (and rejected findings, where
    nothing should be marked), a new slice and shift for each example at every step (training.slabs),
    the book's Dice loss with recall weighting and its Adam; Dice on the validation scans' centred
    crops before and after. `slabs(examples)` gives their SlabStore (default: cut now)."""
    from lungview.training.distributed import batch_sum
    from lungview.training.loops import dice_bce_loss

    t0 = time.perf_counter()
    train, val = data.examples_on("train"), data.examples_on("validation")
    if not any(e.label for e in train):
        raise LungViewError("the training scans hold no mask to learn from (paint one, fill one with G, or import "
                            "an LIDC read)")
    progress(0, 1, "cutting crops")
    slabs = slabs or (lambda ex: cut_slabs(ex, open_scan, data.masks_of, parent.card))
    train_slabs: SlabStore = slabs(train)
    x_val, y_val = slabs(val).centred()
    if cancel is not None:
        cancel.check()
    rng = np.random.default_rng(s.seed)
    torch.manual_seed(s.seed)
    model = copy.deepcopy(parent.module).to(device.device)
    s = replace(s, lr=s.lr or BOOK_LR["segmentation"], batch=min(s.batch, 16))
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    net, rank, share = _parallel(model, device, s.batch)
    validate = (lambda m: {"dice": dice(_seg_predict(getattr(m, "module", m), x_val, device), y_val),
                           "crops": len(x_val)}) if len(x_val) and rank == 0 else None
    before = validate(parent.module) if validate else None
    steps = s.steps_per_epoch or max(4, math.ceil(SEG_DRAWS * len(train_slabs) / s.batch))

    def step_loss():
        x, y = train_slabs.draw(rng.choice(len(train_slabs), s.batch), rng)
        x, y = augment2d(torch.from_numpy(x).to(device.device), torch.from_numpy(y).to(device.device), rng)
        with autocast_gpu(device):
            pred = net(x[share])
        return dice_bce_loss(pred, y[share], batch_sum)

    history = _epochs(net, [], opt, steps, s, step_loss, validate, progress, cancel, on_epoch, state, rng)
    return _result(model, history, before, data, s, t0)
