"""Shared fixtures: pinned seeds, quick/slow gating and the MRtrix3 client."""

from __future__ import annotations

import os
import shutil
import subprocess

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


def _install_mrtrix() -> bool:
    if shutil.which("dwi2fod") and shutil.which("sh2peaks"):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "mrtrix3"], check=True, env=env,
                       capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError):
        return False
    return bool(shutil.which("dwi2fod") and shutil.which("sh2peaks"))


@pytest.fixture(scope="session")
def mrtrix():
    """Make sure MRtrix3's binaries are on PATH (installing Debian's mrtrix3 when missing).

    In CI (``CI=true``) a failed install is an error, not a skip: the MRtrix3 checks are the
    project's proof that its files read correctly in MRtrix3.
    """
    if _install_mrtrix():
        return True
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("MRtrix3 could not be installed (apt-get install mrtrix3)")
    pytest.skip("MRtrix3 is not installed and cannot be installed here")
