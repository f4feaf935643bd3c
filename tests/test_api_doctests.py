"""Every public API function carries a docstring example, and every example runs (doctest)."""
from __future__ import annotations

import doctest
import importlib

import pytest

import yolo_prune

# where each public name's function is defined (api re-exports some of them)
MODULES = ("yolo_prune.api", "yolo_prune.adapters.loading", "yolo_prune.jobs.evaluate", "yolo_prune.jobs.finetune")


def test_every_public_function_has_an_example():
    missing = [name for name in yolo_prune.__all__ if ">>>" not in (getattr(yolo_prune, name).__doc__ or "")]
    assert not missing, f"public functions without a docstring example: {missing}"


def test_the_public_name_benchmark_is_the_function_not_the_subpackage():
    import yolo_prune.benchmark.latency  # noqa: F401  (the subpackage is imported, as any job does)

    assert callable(yolo_prune.benchmark) and yolo_prune.benchmark is yolo_prune.api.benchmark


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
