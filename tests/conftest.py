"""Shared pytest configuration: hypothesis profiles and fixtures.

The hypothesis profile is chosen by the environment variable ``KDLOSS_HYPOTHESIS_PROFILE``:
``ci`` (the default) runs few, fast examples; ``dev`` runs many more. ``test_fuzz.py`` sets
its own counts (``KDLOSS_FUZZ_EXAMPLES``, ``KDLOSS_FUZZ_SECONDS``; see its docstring).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import kdloss
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("KDLOSS_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed, so failures reproduce."""
    return np.random.default_rng(20240607)


@pytest.fixture
def restore_num_threads() -> Iterator[None]:
    """Put the thread count back after a test that changes it."""
    before = kdloss.get_num_threads()
    try:
        yield
    finally:
        kdloss.set_num_threads(before)
