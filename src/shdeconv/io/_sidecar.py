"""JSON sidecars of the output maps, in the BIDS-Derivatives diffusion form (BEP016 draft).

Each NIfTI map gets ``<stem>.json`` beside it: what it holds, the model that made it
(``Model``: Description, URL, Parameters), how orientations are encoded
(``OrientationEncoding``: SH basis and degree, or vectors; always along the 4th axis, in the
image's world ``xyz``, antipodally symmetric), whether non-negativity was imposed, the tissue
response functions used (``ResponseFunction``: zonal SH per shell), and the software and command
line that wrote it.
"""

from __future__ import annotations

import json
import sys
from os import PathLike
from pathlib import Path

import numpy as np

from ._atomic import atomic_write_text

__all__ = ["NONNEGATIVITY", "write_sidecars"]

#: ``NonNegativity`` values: imposed exactly, penalised, or neither.
NONNEGATIVITY = ("constrained", "regularized", "unconstrained")

_DESCRIPTIONS = {
    "fodf": "White-matter fibre orientation distribution function (fODF), real spherical harmonics",
    "gm": "Grey-matter-like isotropic tissue: signal fraction of the b=0 signal",
    "csf": "Free-water (CSF) isotropic tissue: signal fraction of the b=0 signal",
    "peaks": "Up to 3 fODF peaks per voxel: direction scaled by amplitude, NaN where absent (MRtrix3 sh2peaks layout)",
}


def _response(bvals: np.ndarray, coefficients: np.ndarray) -> dict:
    """``ResponseFunction`` of one tissue: zonal SH coefficients ``(shells, L)`` per shell."""
    coefficients = np.atleast_2d(np.asarray(coefficients, dtype=float))
    return {"Type": "zsh", "Shells": [round(float(b), 1) for b in bvals],
            "Coefficients": [[float(c) for c in row] for row in coefficients]}


def write_sidecars(outdir: str | PathLike, files: dict[str, str], *, lmax: int, model: dict, nonnegativity: str,
                   responses: dict[str, tuple[np.ndarray, np.ndarray]], software: dict) -> dict[str, str]:
    """Write ``<stem>.json`` for each map of ``files`` (keys ``fodf``, ``gm``, ``csf``, ``peaks``).

    Parameters
    ----------
    outdir : path-like
    files : dict
        Map key -> NIfTI file name in ``outdir`` (other keys are ignored).
    lmax : int
        SH degree of ``fodf``.
    model : dict
        ``Description``, ``URL`` and ``Parameters`` of the method.
    nonnegativity : str
        One of :data:`NONNEGATIVITY`.
    responses : dict
        Tissue -> ``(shell b-values (n,), zonal coefficients (n, L))`` in units of S0.
    software : dict
        ``Name`` and ``Version`` (``GeneratedBy``).

    Returns
    -------
    dict
        Map key + ``_json`` -> sidecar file name.
    """
    if nonnegativity not in NONNEGATIVITY:
        raise ValueError(f"nonnegativity must be one of {NONNEGATIVITY}, got {nonnegativity!r}")
    outdir = Path(outdir)
    common = {"Model": model, "GeneratedBy": [dict(software)], "CommandLine": " ".join(sys.argv)}
    written = {}
    for key, name in files.items():
        if key not in _DESCRIPTIONS:
            continue
        meta = {"Description": _DESCRIPTIONS[key], **common}
        if key == "fodf":
            meta["OrientationEncoding"] = {"Type": "sh", "SphericalHarmonicBasis": "mrtrix3",
                                           "SphericalHarmonicDegree": int(lmax), "EncodingAxis": 3,
                                           "Reference": "xyz", "AntipodalSymmetry": True}
            meta["NonNegativity"] = nonnegativity
            meta["ResponseFunction"] = {t: _response(*r) for t, r in responses.items()}
        elif key == "peaks":
            meta["OrientationEncoding"] = {"Type": "vector", "EncodingAxis": 3, "Reference": "xyz",
                                           "AntipodalSymmetry": True}
        elif key in responses:
            meta["ResponseFunction"] = _response(*responses[key])
        stem = name[:-len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
        atomic_write_text(outdir / f"{stem}.json", json.dumps(meta, indent=2) + "\n")
        written[f"{key}_json"] = f"{stem}.json"
    return written
