"""Shared fixtures: data locations from the environment, float64 helpers, fresh registries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# The suite is many small tensor loops: one intra-op thread is faster than two there and keeps the suite steady on
# a shared 2-core machine (INVGEN_TEST_THREADS overrides).
torch.set_num_threads(int(os.environ.get("INVGEN_TEST_THREADS", "1")))


def data_root() -> Path | None:
    """``INVGEN_DATA`` if set and present (CI points it at ../shared/data)."""
    root = os.environ.get("INVGEN_DATA")
    return Path(root) if root and Path(root).is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    root = data_root()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail("INVGEN_DATA must point at the shared data in CI")
        pytest.skip("INVGEN_DATA is not set")
    return root


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
