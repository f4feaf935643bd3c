"""Ships ``configs/`` inside the wheel as ``yolo_prune/configs`` (everything else is in pyproject.toml).

The cfgs, hyper-parameters and recipes live at the top of the repository, outside any package,
where a source checkout and an editable install find them. A wheel (``pip install .``,
``pip wheel .``) has no repository around it, so the build copies them into the package;
``yolo_prune.paths`` looks there first.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / "configs"


class BuildWithConfigs(build_py):
    """``build_py`` that also copies the yaml files of ``configs/`` into ``yolo_prune/configs``."""

    def run(self) -> None:
        """Builds the packages, then copies the configs beside them."""
        super().run()
        target = Path(self.build_lib) / "yolo_prune" / "configs"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(CONFIGS, target, ignore=lambda folder, names: [n for n in names if n.startswith(".")])


setup(cmdclass={"build_py": BuildWithConfigs})
