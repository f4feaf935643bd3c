"""Where the project's own files live (cfgs, hyper-parameters, recipes)."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"
MODEL_CFGS_DIR = CONFIGS_DIR / "models"
HYP_DIR = CONFIGS_DIR / "hyp"
PRUNE_RECIPES_DIR = CONFIGS_DIR / "prune"
