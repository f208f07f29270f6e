"""Packages of ``pip install .`` (metadata in pyproject.toml).

Every folder of ``recstudio_edge/`` is a package, and the repository's top-level ``configs/``
is installed as ``recstudio_edge/configs`` (``recstudio_edge.config.CONFIG_DIR`` uses that copy
when it exists, else the repository's ``configs/``): configs stay where the docs, the tests and
``-d=<name>`` users put them, and an installed package finds them too.
"""
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).resolve().parent
CONFIG_DIRS = sorted(p for p in (HERE / "configs").rglob("*") if p.is_dir())
packages = find_namespace_packages(include=["recstudio_edge", "recstudio_edge.*"], exclude=["*.__pycache__"])
packages += ["recstudio_edge.configs"] + ["recstudio_edge.configs." + ".".join(p.relative_to(HERE / "configs").parts)
                                          for p in CONFIG_DIRS]

setup(
    packages=packages,
    package_dir={"recstudio_edge.configs": "configs"},
    package_data={"recstudio_edge.configs": ["*.yaml", "*/*.yaml", "*/*/*.yaml"], "recstudio_edge.tune": ["*.js"]},
)
