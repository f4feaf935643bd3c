"""Where the project's own files live (cfgs, hyper-parameters, recipes).

An installed wheel carries them inside the package (``yolo_prune/configs``, copied there by
the build, see ``setup.py``); a source checkout or an editable install has them at the top of
the repository (``configs/``). The package is looked at first.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent  # meaningful in a source checkout only


def find_configs_dir(package_dir: Path = PACKAGE_DIR) -> Path:
    """``<package>/configs`` when it exists (a wheel), else ``<repository>/configs`` (a checkout).

    Raises:
        FileNotFoundError: neither exists (a broken install).
    """
    for candidate in (package_dir / "configs", package_dir.parent / "configs"):
        if (candidate / "models").is_dir():
            return candidate
    raise FileNotFoundError(f"the project's configs are neither in {package_dir / 'configs'} nor in "
                            f"{package_dir.parent / 'configs'}; reinstall yolo-prune (pip install .)")


CONFIGS_DIR = find_configs_dir()
MODEL_CFGS_DIR = CONFIGS_DIR / "models"
HYP_DIR = CONFIGS_DIR / "hyp"
PRUNE_RECIPES_DIR = CONFIGS_DIR / "prune"
DATA_CFGS_DIR = CONFIGS_DIR / "data"
