"""The scripts of ``docs/results/`` are not a package: tests load them by path."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


@pytest.fixture
def results_script() -> Callable[[str], ModuleType]:
    """``results_script("paired_10k")`` is ``docs/results/paired_10k.py``, freshly loaded."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, RESULTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
