"""Discovery of the diffusion series of a BIDS dataset with pybids.

A dataset is a folder holding ``dataset_description.json``: raw BIDS, or a derivative dataset
(``"DatasetType": "derivative"``, e.g. QSIPrep's ``sub-01_ses-1_space-T1w_desc-preproc_dwi.nii.gz``),
which is indexed with pybids' derivatives configuration so that ``space`` and ``desc`` are
entities. Each ``*_dwi.nii.gz`` (or ``.nii``) of a ``dwi`` folder is one series, with its
``.bval``/``.bvec`` (the file of the same name, else the nearest one by the BIDS inheritance
principle) and, where there is one, its brain mask: the file in the same folder with the same
entities plus ``desc-brain`` and the suffix ``mask`` (QSIPrep's naming).

Output names are built from the file names themselves, not from pybids' parsed values (which
turn ``run-01`` into the integer 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from ..io import InputError

__all__ = ["DwiSeries", "KEPT_ENTITIES", "find_dwi", "split_name"]

#: Entities of an input name that its outputs keep, in BIDS order (``desc`` is dropped).
KEPT_ENTITIES = ("sub", "ses", "acq", "rec", "dir", "run", "space")
_NIFTI = (".nii.gz", ".nii")


def split_name(name: str) -> tuple[dict[str, str], str, str]:
    """``(entities, suffix, extension)`` of a BIDS file name, values as written.

    ``"sub-01_run-01_dwi.nii.gz"`` -> ``({"sub": "01", "run": "01"}, "dwi", ".nii.gz")``.
    Parts without a ``key-value`` form are ignored.
    """
    ext = next((e for e in _NIFTI if name.endswith(e)), None)
    if ext is None:
        ext = "." + name.rsplit(".", 1)[1] if "." in name else ""
    stem = name[: len(name) - len(ext)]
    *parts, suffix = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts if "-" in p)
    return entities, suffix, ext


@dataclass(frozen=True)
class DwiSeries:
    """One diffusion series of a dataset and the files it needs.

    Attributes
    ----------
    subject, session : str, str or None
        Labels without their ``sub-``/``ses-`` prefix.
    dwi : Path
        The 4-D diffusion NIfTI.
    bval, bvec : Path or None
        Its gradient files (None where the dataset has none for it: the job then fails with an
        :class:`~shdeconv.io.InputError`).
    mask : Path or None
        Its ``desc-brain`` mask, if the dataset has one.
    entities : dict
        The entities of the dwi's file name, values as written.
    """

    subject: str
    session: str | None
    dwi: Path
    bval: Path | None
    bvec: Path | None
    mask: Path | None
    entities: dict

    @property
    def stem(self) -> str:
        """The dwi's file name without its extension."""
        name = self.dwi.name
        return name[: len(name) - len(split_name(name)[2])]

    @property
    def prefix(self) -> str:
        """The kept entities as a name prefix, e.g. ``sub-01_ses-1_space-T1w``."""
        return "_".join(f"{k}-{self.entities[k]}" for k in KEPT_ENTITIES if k in self.entities)

    @property
    def folder(self) -> Path:
        """Its outputs' folder relative to the derivative dataset: ``sub-X[/ses-Y]/dwi``."""
        parts = [f"sub-{self.subject}"] + ([f"ses-{self.session}"] if self.session else [])
        return Path(*parts, "dwi")

    @property
    def label(self) -> str:
        """How messages name it: ``sub-01``, ``sub-01 ses-1``, with ``acq``/``rec``/``dir``/``run`` if any."""
        return " ".join(f"{k}-{self.entities[k]}" for k in KEPT_ENTITIES if k in self.entities and k != "space")


def _labels(values, prefix: str) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        v = str(v).strip()
        out.append(v[len(prefix):] if v.startswith(prefix) else v)
    return out


def _description(root: Path) -> dict:
    if not root.is_dir():
        raise InputError(root, "BIDS directory not found" if not root.exists() else "not a directory")
    path = root / "dataset_description.json"
    if not path.is_file():
        raise InputError(root, "not a BIDS dataset (no dataset_description.json)")
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"not readable JSON ({e})") from e
    if not isinstance(desc, dict):
        raise InputError(path, "not a JSON object")
    return desc


def _layout(root: Path, derivative: bool):
    """The pybids index of ``root``: no validation and no metadata (a broken JSON sidecar of
    any file would otherwise stop the indexing of the whole dataset), held in memory."""
    import bids
    from bids.layout import BIDSLayoutIndexer

    config = ["bids", "derivatives"] if derivative else ["bids"]
    try:
        return bids.BIDSLayout(root, validate=False, config=config,
                               indexer=BIDSLayoutIndexer(validate=False, index_metadata=False))
    except Exception as e:  # pybids' own error types differ between versions
        raise InputError(root, f"pybids cannot index this dataset ({type(e).__name__}: {e})") from e


def _sidecar(layout, dwi: Path, ext: str) -> Path | None:
    own = dwi.parent / (dwi.name[: len(dwi.name) - len(split_name(dwi.name)[2])] + ext)
    if own.is_file():
        return own
    nearest = layout.get_nearest(str(dwi), suffix="dwi", extension=ext, all_=True)
    nearest = nearest[0] if isinstance(nearest, list) and nearest else nearest
    return Path(nearest) if nearest else None


def _mask(masks: list[Path], dwi: Path, entities: dict) -> Path | None:
    want = {k: v for k, v in entities.items() if k != "desc"}
    found = []
    for m in masks:
        ents, suffix, ext = split_name(m.name)
        if m.parent == dwi.parent and ext in _NIFTI and ents.get("desc") == "brain" and \
                {k: v for k, v in ents.items() if k != "desc"} == want:
            found.append(m)
    return sorted(found, key=lambda p: (not p.name.endswith(".nii.gz"), p.name))[0] if found else None


def find_dwi(bids_dir: str | PathLike, participant_label=None, session_label=None) -> list[DwiSeries]:
    """The diffusion series of a BIDS dataset, sorted by subject, session and file name.

    Parameters
    ----------
    bids_dir : path-like
        Root of a BIDS dataset (raw, or a derivative dataset such as QSIPrep's output).
    participant_label : str or list of str, optional
        Only these participants (with or without ``sub-``); default: all.
    session_label : str or list of str, optional
        Only these sessions (with or without ``ses-``); default: all, and series without a session.

    Raises
    ------
    InputError
        Naming ``bids_dir`` when it is missing, not a BIDS dataset, holds no diffusion series
        (after the filters), or none of a participant asked for (in any session). Nothing is
        written.
    """
    root = Path(bids_dir)
    desc = _description(root)
    derivative = str(desc.get("DatasetType", "raw")).lower() == "derivative"
    layout = _layout(root, derivative)
    subjects = _labels(participant_label, "sub-")
    sessions = _labels(session_label, "ses-")
    files = [Path(f) for f in layout.get(suffix="dwi", extension=list(_NIFTI), return_type="filename")]
    masks = [Path(f) for f in layout.get(suffix="mask", extension=list(_NIFTI), return_type="filename")]
    series, seen, present = [], set(), set()
    for dwi in sorted(files, key=lambda p: (p.parent, p.name.endswith(".nii"), p.name)):
        entities, _, ext = split_name(dwi.name)
        sub, ses = entities.get("sub"), entities.get("ses")
        if dwi.parent.name != "dwi" or sub is None:
            continue
        if subjects is not None and sub not in subjects:
            continue
        present.add(sub)
        if sessions is not None and ses not in sessions:
            continue
        key = (dwi.parent, dwi.name[: len(dwi.name) - len(ext)])
        if key in seen:  # the same series as .nii.gz and .nii: the .nii.gz is taken
            continue
        seen.add(key)
        series.append(DwiSeries(subject=sub, session=ses, dwi=dwi, bval=_sidecar(layout, dwi, ".bval"),
                                bvec=_sidecar(layout, dwi, ".bvec"), mask=_mask(masks, dwi, entities),
                                entities=entities))
    kind = "derivative" if derivative else "raw"
    if not series:
        which = "" if subjects is None else f" for participant(s) {', '.join(subjects)}"
        which += "" if sessions is None else f" in session(s) {', '.join(sessions)}"
        raise InputError(root, f"no diffusion series (*_dwi.nii.gz in sub-*/[ses-*/]dwi/) found{which} "
                               f"in this {kind} BIDS dataset")
    if subjects is not None:
        missing = sorted(set(subjects) - present)  # a typo, not a participant lacking a session
        if missing:
            raise InputError(root, f"no diffusion series found for participant(s) {', '.join(missing)}")
    series.sort(key=lambda s: (s.subject, s.session or "", s.dwi.name))
    return series
