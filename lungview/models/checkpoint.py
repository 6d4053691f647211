"""Checkpoints: the book's `.state` files and LungView's own format, read with
torch.load(weights_only=True) only — a checkpoint is data, never code.

LungView's format is a dict: {"format": "lungview-checkpoint", "version": 1, "architecture",
"kwargs", "model_state", "card"}; the card says what the model expects and how it was made.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lungview import __version__
from lungview.core import LungViewError
from lungview.core.atomic import atomic_path
from lungview.core.findings import DEFAULT_THRESHOLD
from lungview.models.nets import ARCHITECTURES

FORMAT = "lungview-checkpoint"
ROLES = ("segmentation", "nodule", "malignancy")
_ROLE_ARCH = {"segmentation": "UNetWrapper", "nodule": "LunaModel", "malignancy": "LunaModel"}
BOOK_KWARGS = {
    "UNetWrapper": dict(in_channels=7, n_classes=1, depth=3, wf=4, padding=True, batch_norm=True,
                        up_mode="upconv"),
    "LunaModel": dict(in_channels=1, conv_channels=8),
}


class CheckpointError(LungViewError):
    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")


BOOK_CONTEXT = 3  # the book's U-Net sees 3 slices on each side of the one it segments
BOOK_CROP_IRC = (32, 48, 48)  # the book's classifier crops, in voxels
HU_CLIP = (-1000.0, 1000.0)
LUNA16_SLICE_SPACING_MM = (0.625, 2.5)  # LUNA16 kept LIDC scans with slices of at most 2.5 mm


@dataclass
class ModelCard:
    """What a model expects as input and where it came from. The input spec (hu_clip,
    context_slices, crop_irc, slice_spacing_mm) is what inference and training read."""

    name: str
    role: str
    hu_clip: tuple[float, float] = HU_CLIP
    context_slices: int | None = None  # segmentation: slices on each side of the centre one
    crop_irc: tuple[int, int, int] | None = None  # classifiers: crop size in voxels
    # Slice spacing of the training data: scans outside it are resampled along z for the model.
    slice_spacing_mm: tuple[float, float] | None = None
    spacing_note: str = "native in-plane spacing; slices resampled along z only outside slice_spacing_mm"
    training_data: str = ""
    metrics: dict = field(default_factory=dict)
    parent: str | None = None
    lungview_version: str = __version__
    created: str = ""
    trained_on_phantoms: bool = False
    # a fine-tuned model: its parent's digest, the recipe and its settings, what it learned from,
    # the device and how long it took
    parent_sha256: str | None = None
    recipe: dict = field(default_factory=dict)
    trained_on: dict = field(default_factory=dict)
    device: str = ""
    seconds: float | None = None
    # nodule classifiers: the p_nodule at or above which a candidate is a finding (None: the
    # book's 0.5); a fine-tune sets its own (training.finetune.working_threshold)
    working_threshold: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCard":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("hu_clip", "crop_irc", "slice_spacing_mm"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    @property
    def context(self) -> int:
        return BOOK_CONTEXT if self.context_slices is None else int(self.context_slices)

    @property
    def threshold(self) -> float:
        return DEFAULT_THRESHOLD if self.working_threshold is None else float(self.working_threshold)

    @property
    def crop(self) -> tuple[int, int, int]:
        return BOOK_CROP_IRC if self.crop_irc is None else tuple(int(n) for n in self.crop_irc)


@dataclass
class LoadedModel:
    module: nn.Module
    card: ModelCard
    path: str
    sha256: str
    source: str  # "book", "lungview"
    kwargs: dict = field(default_factory=dict)  # the architecture's arguments (to save a fine-tuned copy)

    @property
    def label(self) -> str:
        return f"{self.card.name} ({Path(self.path).name})"


def book_card(role: str, name: str) -> ModelCard:
    if role == "segmentation":
        return ModelCard(name=name, role=role, context_slices=BOOK_CONTEXT,
                         slice_spacing_mm=LUNA16_SLICE_SPACING_MM,
                         training_data="LUNA16 (book checkpoint, Deep Learning with PyTorch p2ch13)")
    return ModelCard(name=name, role=role, crop_irc=BOOK_CROP_IRC, slice_spacing_mm=LUNA16_SLICE_SPACING_MM,
                     training_data="LUNA16 (book checkpoint, Deep Learning with PyTorch p2ch14)")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(path, "no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file (0 bytes)")
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text and "GLOBAL" in text:
            raise CheckpointError(path, "refused: the file holds Python objects other than "
                                  "tensors (a checkpoint must be data, never code)") from None
        raise CheckpointError(path, "not a PyTorch checkpoint (unreadable pickle)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError,
            IndexError, KeyError, TypeError, AttributeError, MemoryError) as exc:  # garbage can raise any of these
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(path, f"not a PyTorch checkpoint or damaged ({first[:120]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, f"holds a {type(data).__name__}, not a checkpoint dict")
    return data


def load_checkpoint(path: str | os.PathLike, role: str | None = None) -> LoadedModel:
    """Load a checkpoint into its network with strict=True, in eval mode, on the CPU.
    `role` ("segmentation", "nodule", "malignancy") rejects a checkpoint of the wrong kind."""
    path = Path(path)
    data = _read(path)
    if data.get("format") == FORMAT:
        arch = data.get("architecture")
        kwargs = dict(data.get("kwargs") or {})
        card = ModelCard.from_dict(dict(data.get("card") or {}))
        source = "lungview"
    elif "model_state" in data and data.get("model_name") in ARCHITECTURES:
        arch = data["model_name"]
        kwargs = BOOK_KWARGS[arch]
        book_role = "segmentation" if arch == "UNetWrapper" else (role or "nodule")
        card = book_card(book_role, f"book {arch}")
        source = "book"
    else:
        raise CheckpointError(path, "not a LungView or book checkpoint (no model_state with a "
                              "known model_name)")
    if arch not in ARCHITECTURES:
        raise CheckpointError(path, f"unknown architecture {arch!r}")
    if role is not None and _ROLE_ARCH[role] != arch:
        raise CheckpointError(path, f"is a {arch} ({card.role}) checkpoint, not a {role} model")
    if role is not None and source == "lungview" and card.role != role:
        raise CheckpointError(path, f"is a {card.role} model, not a {role} model")
    try:
        module = ARCHITECTURES[arch](**kwargs)
    except TypeError as exc:
        raise CheckpointError(path, f"bad architecture arguments ({exc})") from None
    state = data.get("model_state")
    if not isinstance(state, dict):
        raise CheckpointError(path, "model_state is missing or not a state dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        ours, theirs = set(module.state_dict()), set(state)
        missing, extra = sorted(ours - theirs), sorted(theirs - ours)
        if missing or extra:
            detail = f"{len(missing)} missing key(s) {missing[:2]}, {len(extra)} unexpected {extra[:2]}"
        else:
            detail = str(exc).splitlines()[-1].strip()[:160]
        raise CheckpointError(path, f"weights do not fit {arch}: {detail}") from None
    module.eval()
    return LoadedModel(module=module, card=card, path=str(path), sha256=file_sha256(path), source=source,
                       kwargs=dict(kwargs))


def utc_timestamp() -> str:
    """Now, as ISO 8601 in UTC to the second: when a model was made."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def save_checkpoint(path: str | os.PathLike, module: nn.Module, card: ModelCard, kwargs: dict) -> Path:
    """Write LungView's format atomically (temporary file, fsync, rename)."""
    arch = type(module).__name__
    if arch not in ARCHITECTURES:
        raise ValueError(f"cannot save {arch}: not one of {sorted(ARCHITECTURES)}")
    card = dataclasses.replace(card, created=card.created or utc_timestamp(), lungview_version=__version__)
    payload = {
        "format": FORMAT, "version": 1, "architecture": arch, "kwargs": dict(kwargs),
        "model_state": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "card": dataclasses.asdict(card),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return Path(path)
