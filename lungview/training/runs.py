"""Training runs: a source of examples (a workspace's reviews, LUNA16, or both) turned into a
fine-tune (training.finetune) from the active model of the role, the new checkpoint written
atomically with its card into the user model directory and registered, activated only when
accepted; a long run's state kept after each epoch so that it can be resumed.

Plain Python (no Qt): `lungview train` and the viewer's training panel drive the same code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from lungview import __version__
from lungview.core import LungViewError
from lungview.core.atomic import atomic_path
from lungview.core.jobs import CancelToken, ProgressCallback, no_progress
from lungview.inference.device import DeviceInfo
from lungview.io import open_volume
from lungview.models.checkpoint import BOOK_KWARGS, LoadedModel, load_checkpoint, save_checkpoint, utc_timestamp
from lungview.models.registry import user_data_dir
from lungview.models.versions import ModelVersion, active_version, new_id, register, trained_path
from lungview.training.augment import BOOK_SEG_AUGMENTATION, EXACT_AUGMENTATION
from lungview.training.cache import crop_cache, slab_cache
from lungview.training.distributed import barrier, rank_and_size
from lungview.training.examples import TrainingData, training_data
from lungview.training.finetune import Settings, augmentation_of, finetune
from lungview.training.luna16 import luna16_training_data
from lungview.training.slabs import SlabStore, cut_slabs


class RunState:
    """A long run's progress after each epoch (weights, optimizer, random generators, curves),
    written atomically by process 0: `--resume` continues an interrupted run from the end of its
    last epoch to the weights an uninterrupted run reaches. Loaded with weights_only."""

    def __init__(self, path, resume: bool = False):
        self.path, self.resume = Path(path), resume

    def restore(self, model: torch.nn.Module, opt, rng: np.random.Generator) -> tuple[int, list[dict]]:
        """(epochs done, their history): 0 and [] unless resuming a run that has a state."""
        if not (self.resume and self.path.exists()):
            return 0, []
        try:
            d = torch.load(self.path, map_location="cpu", weights_only=True)
            model.load_state_dict(d["model"])
            opt.load_state_dict(d["optimizer"])
            rng.bit_generator.state = d["rng"]
            torch.set_rng_state(d["torch_rng"])
            return int(d["epoch"]), list(d["history"])
        except Exception as exc:  # noqa: BLE001 - a damaged state is one line, never a traceback
            raise LungViewError(f"{self.path}: cannot resume from it ({type(exc).__name__}: {exc}); delete it to "
                                "start over") from None

    def save(self, epoch: int, model: torch.nn.Module, opt, rng: np.random.Generator, history: list[dict]) -> None:
        if rank_and_size()[0] != 0:
            return
        state = {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "history": history}
        with atomic_path(self.path, ".pt") as tmp:
            torch.save(state, tmp)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def parent_for(role: str, model_path: str | None = None) -> tuple[LoadedModel, str]:
    """The model a fine-tune starts from and its registry id: the active one of the role; for
    malignancy without one, the active nodule classifier (the book starts there)."""
    if model_path:
        return load_checkpoint(model_path, role), model_path
    v = active_version(role)
    if v is None and role == "malignancy":
        v = active_version("nodule")
        if v is not None:
            model = load_checkpoint(v.path, "nodule")
            return replace(model, card=replace(model.card, role="malignancy",
                                               name="malignancy head on " + model.card.name)), v.id
    if v is None:
        raise LungViewError(f"no active {role} model to start from")
    return load_checkpoint(v.path, role), v.id


def train_from_workspace(ws, role: str, device: DeviceInfo, settings: Settings | None = None,
                         validation: list[str] | None = None, progress: ProgressCallback = no_progress,
                         cancel: CancelToken | None = None, on_epoch=None, model_path: str | None = None):
    """The whole run: examples and sides (fixed in the workspace before training starts), the
    parent, the fine-tune, the checkpoint (atomically) with its card in the user model directory,
    the registry entry, activated only when accepted. Returns (Result, ModelVersion)."""
    data = training_data(ws, role, validation)
    if not data.examples:
        raise LungViewError(f"{ws.root}: no reviewed findings to learn {role} from")
    ws.set_splits(data.sides)
    return train_and_register(data, lambda uid: ws.entry(uid).path, f"reviewed scan(s) of {ws.root}",
                              {"workspace": str(ws.root)}, device, settings, progress, cancel, on_epoch, model_path)


def train_from_luna16(root, role: str, device: DeviceInfo, settings: Settings | None = None, fold: int | None = None,
                      max_negatives: int | None = 100, cache_dir=None, workers: int = 0, resume: bool = False,
                      progress: ProgressCallback = no_progress, cancel: CancelToken | None = None, on_epoch=None,
                      model_path: str | None = None, workspace=None, validation: list[str] | None = None):
    """The same run on a LUNA16 folder (training.luna16): its annotations and candidates (at most
    `max_negatives` negatives per scan), the book's split or LUNA16's fold. The classifiers' crops
    go through the crop cache in `cache_dir` (default: the user data folder's cache/crops), built
    by `workers` processes where missing. The run's state is kept after each epoch in the user
    data folder's training/ (removed when the model is registered); `resume` continues from it.
    With `workspace`, its reviewed scans join the run, on the sides training_data gives them."""
    s = settings or Settings()
    data, luna = luna16_training_data(root, role, fold, max_negatives, s.seed)
    luna_masks = data.masks_of
    if not data.examples:
        raise LungViewError(f"{luna.root}: no annotations or candidates of its scans to learn {role} from")
    where = {"luna16": str(luna.root), "fold": fold, "max_negatives": max_negatives}
    source, path_of = f"LUNA16 scan(s) of {luna.root}", luna.scans.__getitem__
    if workspace is not None:
        mine = training_data(workspace, role, validation)
        both = sorted(set(mine.examples) & set(data.examples))
        if both:
            raise LungViewError(f"scan {both[0]} is in {workspace.root} and in {luna.root}: train on it from one")
        workspace.set_splits(mine.sides)
        data = merge_data(data, mine)
        where["workspace"] = str(workspace.root)
        source = f"scan(s) of {luna.root} (LUNA16) and {workspace.root}"
        path_of = lambda uid: luna.scans[uid] if uid in luna.scans else workspace.entry(uid).path  # noqa: E731
    return train_and_register(data, path_of, source, where, device, s, progress, cancel, on_epoch, model_path,
                              cache_dir=cache_dir or user_data_dir() / "cache" / "crops", workers=workers,
                              state_dir=user_data_dir() / "training", resume=resume,
                              masks_cached=(set(luna.scans), luna_masks))


def _cached_slabs(data: TrainingData, path_of, card, cache_dir, masks_cached, open_scan, workers: int,
                  progress: ProgressCallback, cancel: CancelToken | None, rank: int):
    """`slabs(examples)` for the U-Net recipe: the scans of `masks_cached` from the slab cache
    (built first by process 0 where missing), the others cut in memory."""
    uids, masks_of = masks_cached
    cached = {u: ex for u, ex in data.examples.items() if u in uids}
    cache = slab_cache(cache_dir, card)
    if rank == 0:
        cache.build(cached, path_of, card, masks_of, workers, progress, cancel)
    barrier()

    def slabs(examples):
        inside = cache.slabs([e for e in examples if e.scan in cached], card.context)
        outside = cut_slabs([e for e in examples if e.scan not in cached], open_scan, data.masks_of, card)
        return SlabStore(inside.parts + outside.parts, card.context)
    return slabs


def merge_data(a: TrainingData, b: TrainingData) -> TrainingData:
    """Two sources' examples (of different scans) as one: their sides, notes and masks."""
    return TrainingData(a.role, {**a.examples, **b.examples}, {**a.sides, **b.sides}, a.notes + b.notes,
                        masks_of=lambda uid, vol: (a.masks_of if uid in a.examples else b.masks_of)(uid, vol))


def train_and_register(data: TrainingData, path_of, source: str, where: dict, device: DeviceInfo,
                       settings: Settings | None = None, progress: ProgressCallback = no_progress,
                       cancel: CancelToken | None = None, on_epoch=None, model_path: str | None = None,
                       cache_dir=None, workers: int = 0, state_dir=None, resume: bool = False,
                       masks_cached=None):
    """Fine-tunes the parent on `data` (scans opened from `path_of(uid)`; with `cache_dir`, the
    classifiers' crops from the crop cache there, built first where missing, and the U-Net's
    slabs of the scans in `masks_cached` = (UIDs, their masks_of), whose masks do not change
    between runs: LUNA16's, grown from its annotations; with `state_dir`, the
    run's state after each epoch there, and `resume` continues it), writes the checkpoint with its
    card and registers it, activated only when accepted. Returns (Result, ModelVersion); in a
    process group, process 0 alone writes (the others get (Result, None))."""
    settings = settings or Settings()
    role = data.role
    parent, parent_id = parent_for(role, model_path)
    opened: dict[str, object] = {}

    def open_scan(uid):
        if uid not in opened:
            opened.clear()  # one scan in memory at a time (crops are cut scan by scan)
            opened[uid] = open_volume(path_of(uid), series=uid, cancel=cancel)
        return opened[uid]

    rank = rank_and_size()[0]
    crops = slabs = None  # cut in memory by finetune
    if cache_dir is not None and role != "segmentation":
        store = crop_cache(cache_dir, parent.card, int(EXACT_AUGMENTATION["shift_voxels"]))
        if rank == 0:  # the others wait for it, then read it
            store.build(data.examples, path_of, parent.card, workers, progress, cancel)
        barrier()
        crops = store.crops
    if cache_dir is not None and role == "segmentation" and masks_cached is not None:
        slabs = _cached_slabs(data, path_of, parent.card, cache_dir, masks_cached, open_scan, workers, progress,
                              cancel, rank)
    state = None
    if state_dir is not None:
        run = {"where": where, "role": role, "settings": asdict(settings), "parent": parent.sha256,
               "scans": sorted(data.examples)}
        key = hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()[:16]
        state = RunState(Path(state_dir) / f"{role}-{key}.pt", resume)
    result = finetune(data, parent, open_scan, device, settings, progress, cancel, on_epoch, crops, state, slabs)
    if rank != 0:
        return result, None  # process 0 writes and registers
    model_id = new_id(role)
    counts = result.counts
    own = parent.card.working_threshold if result.working_threshold is None else result.working_threshold
    card = replace(
        parent.card, name=f"{role} fine-tuned ({model_id})", role=role, parent=parent_id,
        parent_sha256=parent.sha256, created="", lungview_version=__version__, trained_on_phantoms=False,
        training_data=(f"fine-tuned on {counts['train']['scans']} {source}: "
                       f"{counts['train']['positives']} positive and {counts['train']['negatives']} negative "
                       f"examples; validated on {counts['validation']['scans']} scan(s)"),
        metrics={"before": result.before, "after": result.after, "verdict": result.verdict, "reason": result.reason},
        recipe={"name": f"book {role} fine-tune", **result.settings,
                "augmentation": BOOK_SEG_AUGMENTATION if role == "segmentation"
                else augmentation_of(parent.card, settings.augmentation)},
        trained_on={**where, "scans": counts["per_scan"]}, device=device.name,
        seconds=round(result.seconds, 2),
        working_threshold=own if role == "nodule" else None)
    path = trained_path(model_id)
    save_checkpoint(path, result.model, card, parent.kwargs or BOOK_KWARGS[type(result.model).__name__])
    version = ModelVersion(id=model_id, role=role, path=str(path), parent=parent_id, parent_sha256=parent.sha256,
                           verdict=result.verdict, reason=result.reason,
                           metrics={"before": result.before, "after": result.after}, created=utc_timestamp())
    register(version, activate=result.verdict == "accepted")
    if state is not None:
        state.clear()
    return result, version

