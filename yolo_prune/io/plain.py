"""Plain Python values for everything a checkpoint holds outside the model.

A numpy scalar or array pickles as a reference to numpy's own modules; under numpy 2 that
is ``numpy._core.multiarray``, which numpy 1.x (pinned by the official YOLOv7 requirements)
cannot import, so such a file fails to load there. Converting to floats, ints and lists
before saving keeps every file we write loadable under numpy 1.18 - 2.x.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def plain_values(obj: Any) -> Any:
    """``obj`` with every numpy scalar / array inside dicts, lists and tuples made plain Python.

    Tensors, modules and other objects are returned as they are (the same object).

    Example:
        >>> plain_values({"best_fitness": np.array([0.5]), "epoch": np.int64(3), "x": [np.float32(1.5)]})
        {'best_fitness': [0.5], 'epoch': 3, 'x': [1.5]}
    """
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    if isinstance(obj, dict):
        return {key: plain_values(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [plain_values(value) for value in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):  # leave named tuples alone
        return tuple(plain_values(value) for value in obj)
    return obj
