"""Shared fixtures: pinned seeds, quick/slow gating and the MRtrix3 client."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _pin_seeds():
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def mrtrix():
    """MRtrix3's binaries on PATH (``make test`` installs Debian's mrtrix3 where it can).

    In CI (``CI=true``) their absence is an error, not a skip: the MRtrix3 checks are the
    project's proof that its files read correctly in MRtrix3.
    """
    if shutil.which("dwi2fod") and shutil.which("sh2peaks"):
        return True
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("MRtrix3 is not installed (make test installs it with apt-get install mrtrix3)")
    pytest.skip("MRtrix3 is not installed (apt-get install mrtrix3, or make mrtrix)")
