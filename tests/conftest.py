"""Shared test setup: one torch thread (a busy 2-core machine runs up to 20x slower with two),
and tests marked ``gpu`` skip with a reason where torch sees no CUDA."""

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


GPU_SKIP_REASON = "needs CUDA: torch.cuda.is_available() is False"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test marked ``gpu`` (``-m gpu`` selects them) where torch sees no CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
