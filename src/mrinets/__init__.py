"""mrinets: deep-learning pipelines that turn brain MRI into quantitative biomarkers.

Each pipeline is reachable from the top, ``from mrinets import qsm`` or
``mrinets.wmh.predict(...)``; it is imported on first use, so that ``import
mrinets`` stays light (no torch) for tools that only need the version.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

try:
    __version__ = version("mrinets")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"


PIPELINES = ("qsm", "wmh", "cmb", "microstructure", "lowfield")

__all__ = ["__version__", "PIPELINES", *PIPELINES]


def __getattr__(name: str) -> ModuleType:
    if name in PIPELINES:
        module = importlib.import_module(f"mrinets.pipelines.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'mrinets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PIPELINES))
