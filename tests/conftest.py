"""Shared test switches: ``slow`` and ``gpu`` markers, isolated caches."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (none here)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    """Point PHYSEG_CACHE and PHYSEG_BUILD at fresh temporary folders."""
    cache = tmp_path / "cache"
    build = tmp_path / "build"
    monkeypatch.setenv("PHYSEG_CACHE", str(cache))
    monkeypatch.setenv("PHYSEG_BUILD", str(build))
    return cache, build
