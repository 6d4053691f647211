"""Where models come from: explicit paths first, then the user's model directory (so that after
one fetch real scans run on the LUNA16-trained weights), then the shipped demo models."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from lungview.core import LungViewError
from lungview.models.checkpoint import ROLES, LoadedModel, load_checkpoint

PREFIX = {"segmentation": "seg", "nodule": "cls", "malignancy": "mal"}
SUFFIXES = (".state", ".pt", ".pth")


def user_data_dir() -> Path:
    """$LUNGVIEW_HOME, else $XDG_DATA_HOME/lungview, else ~/.local/share/lungview."""
    if os.environ.get("LUNGVIEW_HOME"):
        return Path(os.environ["LUNGVIEW_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "lungview"


def user_model_dir() -> Path:
    return user_data_dir() / "models"


def demo_model_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "resources" / "models"


@dataclass(frozen=True)
class ModelChoice:
    role: str
    path: Path
    origin: str  # "option", "user", "trained" (made by LungView, made active), "demo"


def _find(folder: Path, role: str) -> Path | None:
    if not folder.is_dir():
        return None
    found = [p for p in folder.rglob(f"{PREFIX[role]}*")
             if p.suffix in SUFFIXES and p.is_file() and ".partial." not in p.name]
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name)) if found else None


def resolve_models(seg: str | None = None, cls: str | None = None, mal: str | None = None,
                   use_user_dir: bool = True) -> dict[str, ModelChoice | None]:
    """A choice per role; malignancy may be None (then no malignancy is reported)."""
    from lungview.models.versions import load_registry, list_versions

    explicit = {"segmentation": seg, "nodule": cls, "malignancy": mal}
    # the versions made active in the registry (`lungview models use`, an accepted training)
    active = load_registry()["active"] if use_user_dir else {}
    chosen = {v.role: v for v, on in list_versions() if on and active.get(v.role) == v.id} if active else {}
    out: dict[str, ModelChoice | None] = {}
    for role in ROLES:
        if explicit[role]:
            out[role] = ModelChoice(role, Path(explicit[role]).expanduser(), "option")
            continue
        if role in chosen and Path(chosen[role].path).is_file():
            v = chosen[role]
            origin = "demo" if v.id.startswith("demo-") else "user" if v.builtin else "trained"
            out[role] = ModelChoice(role, Path(v.path), origin)
            continue
        user = _find(user_model_dir(), role) if use_user_dir else None
        if user is not None:
            out[role] = ModelChoice(role, user, "user")
            continue
        demo = _find(demo_model_dir(), role)
        out[role] = ModelChoice(role, demo, "demo") if demo is not None else None
    # The phantom-trained malignancy model only goes with the phantom-trained nodule model: beside
    # the book's (LUNA16) models it would be misleading, and none is used instead.
    mal_choice = out["malignancy"]
    if mal_choice is not None and mal_choice.origin == "demo" and out["nodule"] is not None \
            and out["nodule"].origin != "demo":
        out["malignancy"] = None
    for role in ("segmentation", "nodule"):
        if out[role] is None:
            raise LungViewError(f"no {role} model: pass one explicitly, or put one in {user_model_dir()}")
    return out


class ModelCache:
    """Loaded models kept per (path, mtime, size), so that a re-trained file is picked up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple, LoadedModel] = {}

    def get(self, path: str | os.PathLike, role: str) -> LoadedModel:
        path = Path(path)
        try:
            st = path.stat()
            key = (str(path.resolve()), role, st.st_mtime_ns, st.st_size)
        except OSError:
            return load_checkpoint(path, role)  # raises the clear error
        with self._lock:
            model = self._models.get(key)
        if model is None:
            model = load_checkpoint(path, role)
            with self._lock:
                self._models = {k: v for k, v in self._models.items() if k[:2] != key[:2]}
                self._models[key] = model
        return model


def origin_labels(labels: dict, choices: dict) -> dict:
    """{role: "label [origin]"}: a pipeline's model labels with where each model came from."""
    return {role: f"{label} [{choices[role].origin}]" if choices.get(role) else label for role, label in labels.items()}
