"""Safe checkpoint loading and atomic saving."""
from yolo_prune.io.atomic import atomic_path, atomic_torch_save, atomic_write_json, atomic_write_text

__all__ = ["atomic_path", "atomic_torch_save", "atomic_write_json", "atomic_write_text"]
