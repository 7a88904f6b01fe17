"""STAND-IN for torchvision (test harness only). PyPI's torchvision wheel fails to import beside the CPU
torch ("torchvision::nms does not exist"), yet sglang and transformers import ``torchvision.transforms``,
``torchvision.io`` etc. at module level for their multimodal code. Text models never use them, so every
``torchvision.*`` submodule and attribute is an inert placeholder that raises if it is ever *called*:
a silent wrong result is impossible. Never installed with the package; tests/server puts it on PYTHONPATH.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+standin"
IS_STANDIN = True


class _Placeholder(type):
    """A class standing for any torchvision object: attribute access works, use raises."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__name__}.{name}")

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(f"torchvision stand-in: {cls.__name__} is not available (text models only)")


def _placeholder(name: str) -> type:
    return _Placeholder(name, (), {})


def _module_getattr(modname: str):
    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{modname}.{name}")

    return __getattr__


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = types.ModuleType(spec.name)
        mod.__path__ = []
        mod.__getattr__ = _module_getattr(spec.name)  # type: ignore[attr-defined]
        return mod

    def exec_module(self, module):
        pass


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())

__getattr__ = _module_getattr(__name__)
