"""Files: atomic writing, the loaded-model record, looking inside checkpoints without running them.

Reading a checkpoint is a family's business (``yolo_prune.adapters.<family>``); what every
family shares lives here.
"""
from yolo_prune.io.atomic import (
    atomic_path,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    staged_folder,
)
from yolo_prune.io.checkpoint import TRUST_HINT, CheckpointError, LoadedModel, check_readable
from yolo_prune.io.errors import OutputError

__all__ = ["TRUST_HINT", "CheckpointError", "LoadedModel", "OutputError", "atomic_path", "atomic_torch_save",
           "atomic_write_json", "atomic_write_text", "check_readable", "staged_folder"]
