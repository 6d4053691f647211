"""Book-compatible networks, checkpoint I/O (weights_only) and model cards. No Qt."""

from lungview.models.checkpoint import (CheckpointError, LoadedModel, ModelCard, ROLES, load_checkpoint,
                                        save_checkpoint)
from lungview.models.nets import LunaModel, UNetWrapper

__all__ = ["CheckpointError", "LoadedModel", "LunaModel", "ModelCard", "ROLES", "UNetWrapper",
           "load_checkpoint", "save_checkpoint"]
