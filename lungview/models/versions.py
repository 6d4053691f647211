"""Model versions: every model LungView trains, kept with its card and its verdict, and which one
is active per role. A trained model never replaces another by itself: it becomes active only when
its training run accepted it (no worse than its parent on the validation scans), or when the user
says so (`lungview models use ID`); any earlier version, the book's or the demo weights can be made
active again.

    MODELS/registry.json       {"version": 1, "active": {role: id}, "models": [entry, ...]}
    MODELS/trained/<id>.pt     the checkpoints (LungView's format, with their model cards)

MODELS is the user model directory. Trained files are not named seg*/cls*/mal*, so the "newest
file of the user directory" rule never picks one up unasked.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lungview.core import LungViewError
from lungview.core.atomic import write_text_atomic
from lungview.models.checkpoint import ROLES
from lungview.models.registry import _find, demo_model_dir, user_model_dir

VERSION = 1


@dataclass(frozen=True)
class ModelVersion:
    id: str
    role: str
    path: str
    parent: str | None = None  # the id it was fine-tuned from
    parent_sha256: str | None = None
    verdict: str = "accepted"  # accepted / refused
    reason: str = ""
    metrics: dict = field(default_factory=dict)  # {"before": {...}, "after": {...}} on the validation scans
    created: str = ""  # ISO 8601
    builtin: bool = False  # the book's or the demo weights (listed, never written here)

    def to_dict(self, active: bool = False) -> dict:
        d = asdict(self)
        d["active"] = active
        return d


def _registry_path(root: Path | None = None) -> Path:
    return (root or user_model_dir()) / "registry.json"


def load_registry(root: Path | None = None) -> dict:
    path = _registry_path(root)
    if not path.is_file():
        return {"version": VERSION, "active": {}, "models": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LungViewError(f"{path}: not a LungView model registry ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("version"), int) or data["version"] > VERSION:
        raise LungViewError(f"{path}: model registry of an unknown version")
    data.setdefault("active", {})
    data.setdefault("models", [])
    return data


def _save_registry(data: dict, root: Path | None = None) -> None:
    path = _registry_path(root)
    try:
        write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    except OSError as exc:
        raise LungViewError(f"{path}: cannot write ({exc.strerror})") from None


def builtin_versions(root: Path | None = None) -> list[ModelVersion]:
    """The weights LungView did not train: the newest book checkpoint (or other seg*/cls*/mal*
    file) of the user directory and the shipped demo models, one per role."""
    out = []
    for role in ROLES:
        for origin, folder in (("book", root or user_model_dir()), ("demo", demo_model_dir())):
            found = _find(folder, role)
            if found is not None:
                out.append(ModelVersion(id=f"{origin}-{role}", role=role, path=str(found), builtin=True,
                                        reason=f"{'the user directory' if origin == 'book' else 'shipped'} weights"))
    return out


def list_versions(root: Path | None = None) -> list[tuple[ModelVersion, bool]]:
    """Every version with whether it is active: the built-in ones first, then the trained ones in
    the order they were made."""
    data = load_registry(root)
    trained = [ModelVersion(**{k: v for k, v in m.items() if k in ModelVersion.__dataclass_fields__})
               for m in data["models"]]
    everything = builtin_versions(root) + trained
    out = []
    for v in everything:
        active = data["active"].get(v.role)
        if active is None:  # nothing chosen: the rule of the model resolution (user file, else demo)
            first = next((w for w in everything if w.role == v.role and w.builtin), None)
            is_active = first is not None and first.id == v.id
        else:
            is_active = active == v.id
        out.append((v, is_active))
    return out


def get_version(model_id: str, root: Path | None = None) -> ModelVersion:
    for v, _ in list_versions(root):
        if v.id == model_id:
            return v
    raise LungViewError(f"no model {model_id!r}; `lungview models list` shows them")


def active_version(role: str, root: Path | None = None) -> ModelVersion | None:
    return next((v for v, on in list_versions(root) if v.role == role and on), None)


def use(model_id: str, root: Path | None = None) -> ModelVersion:
    """Makes a version the active one of its role (a refused one too: the user decides)."""
    v = get_version(model_id, root)
    if not Path(v.path).is_file():
        raise LungViewError(f"{v.path}: the checkpoint of {model_id} is missing")
    data = load_registry(root)
    data["active"][v.role] = v.id
    _save_registry(data, root)
    return v


def new_id(role: str, now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{role}-{now.strftime('%Y%m%d-%H%M%S-%f')}"


def trained_path(model_id: str, root: Path | None = None) -> Path:
    return (root or user_model_dir()) / "trained" / f"{model_id}.pt"


def register(version: ModelVersion, activate: bool, root: Path | None = None) -> None:
    """Records a trained model (its checkpoint already written) and activates it if asked."""
    data = load_registry(root)
    if any(m["id"] == version.id for m in data["models"]):
        raise LungViewError(f"model {version.id} is already registered")
    entry = asdict(version)
    entry.pop("builtin")
    data["models"].append(entry)
    if activate:
        data["active"][version.role] = version.id
    _save_registry(data, root)
