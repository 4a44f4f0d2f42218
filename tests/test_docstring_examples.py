"""Every ``Example:`` in the pack's docstrings runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ALGORITHM_PACKAGES = ("common", "videoio", "flow", "propagation", "keyframe", "kernels", "segments", "metrics")
ADAPTER_PACKAGES = ("cli",)
# Loaded only under a fixed module name by propagation.backends.passes (numba cache); no doctests of its own.
NOT_IMPORTED_BY_NAME = {"rerender_video.propagation.backends.cpu_kernels"}


def _modules():
    for package in ALGORITHM_PACKAGES + ADAPTER_PACKAGES:
        if not (ROOT / package / "__init__.py").exists():
            continue
        yield f"rerender_video.{package}"
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"rerender_video.{package}."):
            if info.name not in NOT_IMPORTED_BY_NAME:
                yield info.name


@pytest.mark.parametrize("module_name", sorted(_modules()))
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"
