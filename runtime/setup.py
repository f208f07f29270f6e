"""The runtime distribution's files: ``recstudio_edge/edge/`` of the checkout, only the modules in
``RUNTIME_MODULES`` (they import numpy and onnxruntime, never torch; ``split``'s model-cutting
functions import torch when called and are not usable here)."""
from setuptools import setup
from setuptools.command.build_py import build_py

RUNTIME_MODULES = ("__init__", "runtime", "quantize", "split")


class RuntimeOnly(build_py):
    def find_package_modules(self, package, package_dir):
        return [m for m in super().find_package_modules(package, package_dir) if m[1] in RUNTIME_MODULES]


setup(packages=["recstudio_edge.edge"], package_dir={"recstudio_edge.edge": "../recstudio_edge/edge"},
      cmdclass={"build_py": RuntimeOnly})
