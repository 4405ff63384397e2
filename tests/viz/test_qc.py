"""The QC figure: glyphs of a world-frame fODF drawn in the voxel frame."""

import numpy as np
from scipy.spatial.transform import Rotation

from shdeconv.sphere import rotate_sh, zonal_to_sh
from shdeconv.viz import save_qc_figure


def test_rotation_of_the_drawn_slice_equals_rotating_the_volume_first(tmp_path):
    """``rotation=`` rotates only the drawn slice (no whole-volume copy): the same PNG bytes as
    rotating every voxel beforehand; a wrong frame gives a different picture."""
    rng = np.random.default_rng(0)
    zonal = np.array([0.28, 0.4, 0.3, 0.2, 0.1])
    dirs = rng.normal(size=(6, 7, 5, 3))
    fodf = np.stack([zonal_to_sh(zonal, d, 8) for d in dirs.reshape(-1, 3)]).reshape(6, 7, 5, 45)
    fodf = fodf.astype(np.float32)
    fodf[0, 0] = 0.0
    q = Rotation.random(random_state=1).as_matrix()
    background = np.sqrt(4 * np.pi) * fodf[..., 0]
    history = [{"iteration": 1, "loss": 1.0}, {"iteration": 2, "loss": 0.5}]
    a = save_qc_figure(tmp_path / "a.png", fodf, background, history, rotation=q)
    b = save_qc_figure(tmp_path / "b.png", rotate_sh(fodf, q), background, history)
    c = save_qc_figure(tmp_path / "c.png", fodf, background, history)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
