"""One subject, ready to fit: loading, masking, denoising, responses, normalised signal, and
the forward model and network of its acquisition."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from .._options import DENOISERS, FIT_DENOISE, OptionError
from ..direction import GradientCheck, check_gradients
from ..inference import DEFAULT_TILE_OVERLAP, auto_batch, predict_volume
from ..io import B0_THRESHOLD, DWIData, InputError, load_dwi
from ..io._gradients import voxel_axes_rotation
from ..models._deconv import DeconvNet, NetworkConfig
from ..models._store import LoadedModel
from ..signal import (
    Responses,
    b0_mean,
    brain_mask,
    estimate_responses,
    normalise_signal,
    wm_s0_scale,
)
from ..signal._forward import ForwardModel, linear_deconvolution

__all__ = [
    "AUTO_DENOISE_COHERENCE",
    "AUTO_DENOISE_MIN_PAIRS",
    "DENOISERS",
    "FIT_DENOISE",
    "ISO_MD",
    "SINGLE_SHELL_TISSUES",
    "Subject",
    "acquisition_model",
    "attach_subject",
    "build_network",
    "choose_denoise",
    "denoise_mppca",
    "denoise_pca",
    "isotropic_responses",
    "load_subject",
    "prepare_subject",
    "recorded_warnings",
    "subject_arrays",
]

log = logging.getLogger(__name__)

#: Mean diffusivities (mm^2/s) of the isotropic tissues a single shell is given: one shell and b=0
#: cannot estimate their responses, so they are fixed (GM-like, and free water at body temperature).
ISO_MD = {"gm": 0.8e-3, "csf": 3.0e-3}
#: The isotropic tissues of single-shell fits (multi-shell data get GM and CSF from their own
#: responses).
SINGLE_SHELL_TISSUES = ("gm",)


@dataclass
class Subject:
    """One subject ready for fitting: mask, responses and normalised signal.

    ``directions`` are in the network's frame: the voxel axes for files (``rotation`` maps
    them to the world frame), the gradient table's own frame for the Python API
    (``rotation`` = identity).
    """

    bvals: np.ndarray  # (G,)
    directions: np.ndarray  # (G, 3), zeros for b=0
    mask: np.ndarray  # (X, Y, Z) bool
    responses: Responses
    signal: np.ndarray  # (X, Y, Z, G) S / S0
    s0: np.ndarray  # (X, Y, Z)
    rotation: np.ndarray  # network frame -> world
    dwi: DWIData | None = None
    mask_record: dict | None = None  # how the mask was chosen (signal.brain_mask), for the report
    gradient_check: dict | None = None  # the gradient-table check (gradient_record), for the report
    denoise: str = "none"  # the denoising applied (``auto`` resolved)
    denoise_record: dict | None = None  # why ``auto`` chose it (choose_denoise), for the report
    warnings: list[str] = field(default_factory=list)  # every warning issued while loading, for the report
    load_seconds: dict[str, float] = field(default_factory=dict)  # the loading's stages, for the report

    @property
    def affine(self) -> np.ndarray:
        return self.dwi.affine if self.dwi is not None else np.eye(4)

    def uncrop(self, array: np.ndarray) -> np.ndarray:
        """``array`` ``(X, Y, Z, ...)`` on the subject's grid -> its image's grid (the same
        unless only the mask's box or voxels were read)."""
        return self.dwi.uncrop(array) if self.dwi is not None else array

    def crop(self, array: np.ndarray) -> np.ndarray:
        """``array`` on the image's grid -> the subject's grid (inverse of :meth:`uncrop`)."""
        return self.dwi.crop(array) if self.dwi is not None else array

    @property
    def voxels(self) -> np.ndarray | None:
        """``(X, Y, Z)`` bool: the image's voxels the subject holds when only the mask's voxels
        were read (its arrays are then ``(N, 1, 1, ...)``), else None."""
        return self.dwi.voxels if self.dwi is not None else None


def subject_arrays(subject: Subject) -> list:
    """The arrays a fit of ``subject`` computes on, for its run fingerprint
    (:func:`~shdeconv.io.fingerprint`): signal, mask, gradient table and responses."""
    r = subject.responses
    return [subject.signal, subject.mask, subject.bvals, subject.directions, r.bvals, r.wm, r.gm, r.csf]


def isotropic_responses(responses: Responses, single_shell: tuple[str, ...] | None = None):
    """Names and l=0 coefficients ``(n_shells, T)`` of the isotropic tissues the model fits.

    GM and CSF where the responses have them (multi-shell); otherwise the ``single_shell``
    tissues (default :data:`SINGLE_SHELL_TISSUES`), each ``sqrt(4 pi) exp(-b D)`` per shell
    (units of S0, ``D`` from :data:`ISO_MD`). Returns ``(names, coefficients or None)``.
    """
    single_shell = SINGLE_SHELL_TISSUES if single_shell is None else tuple(single_shell)
    if responses.gm is not None:
        return ("gm", "csf"), np.stack([responses.gm, responses.csf], axis=1)
    if not single_shell:
        return (), None
    unknown = set(single_shell) - set(ISO_MD)
    if unknown:
        raise ValueError(f"unknown isotropic tissue(s) {sorted(unknown)}; expected some of {sorted(ISO_MD)}")
    md = np.array([ISO_MD[t] for t in single_shell])
    return tuple(single_shell), np.sqrt(4 * np.pi) * np.exp(-np.outer(responses.bvals, md))


def acquisition_model(bvals, directions, responses: Responses, lmax: int | None = None, *,
                      single_shell: tuple[str, ...] | None = None):
    """Forward model of an acquisition, the response row of every volume and the input rows.

    ``lmax``: order of the WM kernel (default: the response's own, so higher orders of the
    fODF are free); ``single_shell``: see :func:`isotropic_responses` (the forward model's
    ``iso_names``). Returns ``(ForwardModel, shell_rows (G,), input_rows)``; input rows are the
    non-zero shells that the network sees as channels.
    """
    bvals = np.asarray(bvals, dtype=float)
    rows = responses.rows_for(bvals)
    names, iso = isotropic_responses(responses, single_shell)
    fm = ForwardModel(directions, rows, responses.kernel(responses.lmax if lmax is None else lmax), iso,
                      iso_names=names)
    input_rows = sorted({int(r) for r, b in zip(rows, bvals) if b > B0_THRESHOLD})
    return fm, rows, input_rows


def mppca_radius(n_volumes: int) -> int:
    """The smallest patch radius (at least 2) whose patch holds at least ``n_volumes`` voxels."""
    radius = 2
    while (2 * radius + 1) ** 3 < n_volumes:
        radius += 1
    return radius


def too_thin_for_pca(shape) -> bool:
    """Whether a volume of ``shape`` ``(X, Y, Z, ...)`` is too thin for PCA denoising's 3x3x3 patches
    (:func:`denoise_pca` then returns the data as they are)."""
    return min(shape[:3]) < 3


def denoise_pca(data: np.ndarray, mask: np.ndarray, method: str = "mppca", *, bvals: np.ndarray | None = None,
                directions: np.ndarray | None = None) -> np.ndarray:
    """DIPY's patch-wise PCA denoising inside the mask.

    ``method``:

    * ``"mppca"``: MP-PCA (Veraart 2016); the noise level is read from the Marchenko-Pastur
      law of each patch's eigenvalues, which holds for noise that is white in space.
    * ``"localpca"``: local PCA with a threshold of 2.3 times a noise map estimated first
      (DIPY's ``pca_noise_estimate``, Manjon 2013, Rician-bias corrected, smoothed); needs
      ``bvals`` and ``directions`` (``(G, 3)``, zeros for b=0). It keeps MP-PCA's accuracy on
      white noise and is far better where the noise is correlated in space (partial Fourier,
      parallel imaging, interpolation): docs/benchmarks.md, "Phantom kinds not seen in training".

    The patch radius is the smallest (at least 2) whose patch holds at least as many voxels as
    there are volumes (2 for 33 volumes, 3 for 276), within the volume's thinnest dimension.
    Voxels left non-finite (patches with too few mask voxels, e.g. a small mask on a thin
    volume: DIPY divides by a zero weight there) keep their raw signal, with a warning.
    """
    from dipy.denoise.localpca import localpca, mppca

    names = {"mppca": "MP-PCA", "localpca": "local PCA"}
    if method not in names:
        raise OptionError(f"denoise method must be one of {tuple(names)}, got {method!r}")
    name = names[method]
    if too_thin_for_pca(data.shape):
        warnings.warn(f"{name} skipped: the volume {data.shape[:3]} is too thin for a 3x3x3 patch", UserWarning,
                      stacklevel=2)
        return np.asarray(data, dtype=np.float32)
    radius = max(1, min(mppca_radius(data.shape[-1]), (min(data.shape[:3]) - 1) // 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "mppca":
            out = mppca(data, mask=mask, patch_radius=radius)
        else:
            from dipy.core.gradients import gradient_table
            from dipy.denoise.pca_noise_estimate import pca_noise_estimate

            if bvals is None or directions is None:
                raise ValueError("local PCA needs bvals and directions for its noise map")
            gtab = gradient_table(np.asarray(bvals, dtype=float), bvecs=np.asarray(directions, dtype=float),
                                  b0_threshold=B0_THRESHOLD)
            sigma = pca_noise_estimate(np.asarray(data, dtype=np.float32), gtab, correct_bias=True, smooth=2)
            out = localpca(data, sigma=sigma, mask=mask, patch_radius=radius, suppress_warning=True)
    out = np.asarray(out, dtype=np.float32)
    failed = mask & ~np.isfinite(out).all(axis=-1)
    if failed.any():
        out[failed] = data[failed]
        warnings.warn(f"{name} left {int(failed.sum())} of {int(mask.sum())} mask voxels undefined (too few "
                      f"mask voxels in their {2 * radius + 1}^3 patch); they keep their raw signal",
                      UserWarning, stacklevel=2)
    return out


#: ``--denoise auto`` runs MP-PCA when the fibres of neighbouring voxels agree at least this much
#: (:attr:`~shdeconv.direction.GradientCheck.neighbour_coherence`: 0 unrelated, 1 parallel).
#: Measured (``benchmarks/denoise_evidence.py``, seeds 0-1, SNR 5-20, three schemes): 0.011 or
#: less on phantoms of independent voxels with white noise, up to 0.18 where their noise is
#: smoothed in space (FWHM 1.5 voxels) at SNR 5; 0.27-0.94 on bundle and brain phantoms; 0.38-0.77
#: on DIPY's real crops down to 10 directions. The threshold sits in the gap.
AUTO_DENOISE_COHERENCE = 0.2
#: ... judged on at least this many voxel pairs; with fewer, MP-PCA (the published pipeline's).
AUTO_DENOISE_MIN_PAIRS = 100


def choose_denoise(check: GradientCheck) -> tuple[str, dict]:
    """What ``--denoise auto`` runs on data whose gradient check is ``check``: ``(method, record)``.

    MP-PCA assumes that the signals of a patch's voxels span few dimensions, which holds where
    neighbouring voxels share their fibres (brains, bundle phantoms). Where they do not (voxels
    simulated independently), the patch is not low-rank and MP-PCA removes the weak signal
    components with the noise: the detail of crossings (``fit``'s 2-fibre success 0.52 -> 0.36
    on such a phantom). The rule: ``"mppca"`` when ``check.neighbour_coherence`` is at least
    :data:`AUTO_DENOISE_COHERENCE` or fewer than :data:`AUTO_DENOISE_MIN_PAIRS` pairs judge it,
    else ``"none"``. ``record`` is the report's account of the choice.
    """
    c, pairs = float(check.neighbour_coherence), int(check.neighbour_pairs)
    if pairs < AUTO_DENOISE_MIN_PAIRS or not np.isfinite(c):
        method = "mppca"
        reason = f"{pairs} neighbouring anisotropic voxel pairs, fewer than {AUTO_DENOISE_MIN_PAIRS} to judge by"
    elif c >= AUTO_DENOISE_COHERENCE:
        method = "mppca"
        reason = f"neighbouring fibres agree ({c:.2f} >= {AUTO_DENOISE_COHERENCE:g}): MP-PCA's patches are redundant"
    else:
        method = "none"
        reason = (f"neighbouring fibres are unrelated ({c:.2f} < {AUTO_DENOISE_COHERENCE:g}): MP-PCA would remove "
                  "signal with the noise")
    record = {"requested": "auto", "method": method, "neighbour_coherence": None if not np.isfinite(c) else c,
              "pairs": pairs, "threshold": AUTO_DENOISE_COHERENCE, "reason": reason}
    return method, record


def denoise_mppca(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """DIPY's MP-PCA inside the mask: :func:`denoise_pca` with ``method="mppca"``."""
    return denoise_pca(data, mask, "mppca")


def prepare_subject(data, bvals, directions, mask, *, rotation=None, responses: Responses | None = None,
                    response_files: dict | None = None, lmax: int = 8, dwi: DWIData | None = None,
                    keep_raw: bool = True) -> Subject:
    """Normalise the signal and estimate (or read) the responses of one subject held in memory.

    ``keep_raw=False`` normalises a float32 ``data`` in place (responses are estimated from
    it first), so that the subject holds one volume-sized array instead of two; ``dwi.data``
    is then dropped from the returned subject (``subject.dwi.data is None``). The default
    leaves ``data`` untouched (it may be the caller's array).
    """
    bvals = np.asarray(bvals, dtype=float)
    directions = np.where(bvals[:, None] > B0_THRESHOLD, np.asarray(directions, dtype=float), 0.0)
    data = np.asarray(data, np.float32)
    b0 = np.flatnonzero(bvals <= B0_THRESHOLD)
    mask = np.asarray(mask, bool)
    _, good = b0_mean(data, b0, mask)
    if not good.any():
        raise ValueError("the mask holds no voxel with a positive b=0 signal")
    if responses is None and response_files and response_files.get("wm"):
        # a file without a b=0 row is scaled by the S0 of this subject's single-fibre voxels, the
        # same voxels an estimated response would come from: a file written here reads back exactly
        responses = Responses.from_files(
            response_files["wm"], response_files.get("gm"), response_files.get("csf"),
            bvals_of_data=bvals, s0_scale=lambda: wm_s0_scale(data, bvals, directions, good),
        )
    if responses is None:
        responses = estimate_responses(data, bvals, directions, good, lmax=lmax)
    signal, s0, mask = normalise_signal(data, b0, mask, out=None if keep_raw else data)
    if not keep_raw and dwi is not None:
        dwi = replace(dwi, data=None)  # its array now holds the normalised signal
    rotation = np.eye(3) if rotation is None else rotation
    return Subject(bvals, directions, mask, responses, signal, s0, rotation, dwi)


@contextlib.contextmanager
def recorded_warnings():
    """Collect the messages of the warnings issued inside, and issue them again on leaving.

    Yields a list that receives each distinct ``UserWarning`` message once, in order (libraries'
    deprecation and numerical warnings are not about the user's data); every warning then
    reaches the caller's filters and stderr as it would have (once), also when the block
    raises. So a report can name everything the user was warned about.
    """
    messages: list[str] = []
    unique: dict = {}  # (message, category) -> the first such warning
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield messages
            finally:
                for w in caught:
                    unique.setdefault((str(w.message), w.category), w)
                messages.extend(message for message, category in unique if issubclass(category, UserWarning))
    finally:  # outside catch_warnings: the caller's filters apply again
        for w in unique.values():
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def load_subject(dwi_path, bvals=None, bvecs=None, mask_path=None, *, grad=None, response_files: dict | None = None,
                 lmax: int = 8, denoise: str = "none", keep_raw: bool = True, voxels_only: bool = False) -> Subject:
    """Load and check one subject's files, make the mask, check the gradient table, denoise if
    asked, prepare it.

    The gradient table is FSL's ``bvals`` and ``bvecs``, an MRtrix3 ``grad`` file, or (neither
    given) an MRtrix3 image's own (:func:`~shdeconv.io.load_dwi`).

    The gradient table is checked against its 23 axis flips and permutations
    (:func:`~shdeconv.direction.check_gradients`, seconds on a whole brain): when another is
    clearly more coherent a warning names it (the table is used as given); the verdict is in
    ``subject.gradient_check`` for the report. The network works in the voxel-axes frame,
    ``u_vox = R^T u_world``. ``keep_raw=False``: see :func:`prepare_subject` (the networks need
    only the normalised signal; CSD needs the raw one). ``denoise="auto"``: :func:`choose_denoise`
    decides from the gradient check (of the raw signal) whether MP-PCA runs; what ran is in
    ``subject.denoise``, why in ``subject.denoise_record``.

    With a mask only its bounding box is read (grown by MP-PCA's patch radius when denoising),
    or with ``voxels_only`` only its voxels: the subject's arrays are then ``(N, 1, 1, ...)``,
    for per-voxel work (``subject.uncrop`` puts them on the image's grid); not with MP-PCA,
    whose patches need the neighbours. Every warning issued meanwhile (a repaired voxel, a
    clustered gradient table, ...) is also in ``subject.warnings``.
    """
    with recorded_warnings() as messages:
        subject = _load_subject(dwi_path, bvals, bvecs, mask_path, grad=grad, response_files=response_files,
                                lmax=lmax, denoise=denoise, keep_raw=keep_raw, voxels_only=voxels_only)
    subject.warnings = messages
    return subject


def _load_subject(dwi_path, bvals, bvecs, mask_path, *, grad, response_files, lmax, denoise, keep_raw,
                  voxels_only) -> Subject:
    if denoise not in DENOISERS:
        raise OptionError(f"denoise must be one of {DENOISERS}, got {denoise!r}")
    if voxels_only and denoise != "none":
        raise ValueError("PCA denoising needs each voxel's neighbours: it cannot run on the mask's voxels alone")
    crop = "voxels" if voxels_only else mppca_radius if denoise != "none" else 0
    stages = Stopwatch()
    dwi = load_dwi(dwi_path, bvals, bvecs, mask_path, grad_path=grad, crop=crop)
    stages.lap("read")
    mask, mask_record = brain_mask(dwi.data, dwi.bvals, dwi.directions_world, dwi.mask,
                                   source=None if mask_path is None else str(mask_path), beyond=dwi.beyond)
    stages.lap("mask")
    if dwi.box is not None:
        mask_record["box"] = [[int(b.start), int(b.stop)] for b in dwi.box]
    if dwi.voxels is not None:
        mask_record["read"] = "the mask's voxels"
    mask &= ~dwi.bad_voxels
    if not mask.any():
        if mask_path is not None:
            raise InputError(mask_path, f"none of the mask's {mask_record['mask_voxels']} voxels has a positive, "
                             f"finite b=0 signal in {dwi.path}")
        raise InputError(dwi.path, "no voxel has a positive, finite b=0 signal, so there is nothing to fit")
    # the check follows fibres from voxel to voxel: with the mask's voxels alone, by their coordinates
    image, image_mask = (dwi.data, mask) if dwi.voxels is None else (dwi.image(), dwi.uncrop(mask))
    check = check_gradients(image, dwi.bvals, dwi.bvecs, dwi.affine, image_mask)
    gradients = gradient_record(check, dwi.gradient_file)
    stages.lap("gradient_check")
    choice = None
    if denoise == "auto":
        denoise, choice = choose_denoise(check)
        log.info("--denoise auto: %s (%s)", denoise, choice["reason"])
    if denoise != "none":
        skipped = too_thin_for_pca(dwi.data.shape)  # denoise_pca warns; the records say what was done
        dwi.data = denoise_pca(dwi.data, mask.astype(bool), denoise, bvals=dwi.bvals, directions=dwi.directions_world)
        if skipped:
            denoise = "none"
        else:
            stages.lap("denoise")
    rot = voxel_axes_rotation(dwi.affine)
    subject = prepare_subject(dwi.data, dwi.bvals, dwi.directions_world @ rot, mask, rotation=rot,
                              response_files=response_files, lmax=lmax, dwi=dwi, keep_raw=keep_raw)
    stages.lap("responses_and_normalisation")
    subject.load_seconds = stages.seconds
    subject.mask_record = dict(mask_record, voxels=int(subject.mask.sum()))
    subject.gradient_check = gradients
    subject.denoise, subject.denoise_record = denoise, choice
    return subject


class Stopwatch:
    """Seconds of consecutive stages: ``lap(name)`` ends the stage begun at the previous lap."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._t
        self._t = now


def gradient_record(check: GradientCheck, table_path) -> dict:
    """The report's record of a gradient-table check; warns, naming the file that holds the
    directions (``table_path``), when another table is clearly better."""
    record = {"verdict": check.message, "clearly_better": bool(check.clearly_better), "best": check.best_label,
              "z_score": float(check.z_score), "relative_gain": float(check.relative_gain),
              "voxels": int(check.n_voxels), "warning": None}
    if check.clearly_better:
        record["warning"] = (f"{table_path}: {check.message} (used as given; `shdeconv check-gradients` writes "
                             "the suggested table)")
        warnings.warn(record["warning"], UserWarning, stacklevel=3)
    return record


def head_tissues(config: NetworkConfig, single_shell: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Single-shell isotropic tissues of a network: none for the linear head (as it was trained),
    else ``single_shell`` (default :data:`SINGLE_SHELL_TISSUES`)."""
    if config.head != "softplus":
        return ()
    return SINGLE_SHELL_TISSUES if single_shell is None else tuple(single_shell)


def attach_subject(net: DeconvNet, subject: Subject) -> ForwardModel:
    """Give a trained network a subject's linear deconvolution; returns the subject's forward model."""
    fm, _, _ = acquisition_model(subject.bvals, subject.directions, subject.responses, net.config.response_lmax,
                                 single_shell=head_tissues(net.config))
    net.set_init_matrix(linear_deconvolution(fm))
    return fm


def predicted_start(subject: Subject, device, *, progress: bool = False) -> np.ndarray:
    """The shipped model's WM fODF ``[X, Y, Z, S]`` of ``subject`` (its signal as loaded, denoised or
    not), in the subject's voxel frame: ``fit --variant direct --init predict`` starts from it."""
    return amortized_prediction(subject, device, progress=progress)[0]


def amortized_prediction(subject: Subject, device, model=None, *, precision: str = "float32",
                         progress: bool = False) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """A trained network's one pass over ``subject`` at its defaults (tiles of its training patch
    size, :data:`~shdeconv.inference.DEFAULT_TILE_OVERLAP`): WM fODF ``[X, Y, Z, S]`` in the
    subject's voxel frame, isotropic maps ``[X, Y, Z, T]`` (or None) and their tissue names.
    ``model``: a model file or :class:`~shdeconv.models.LoadedModel` (default: the shipped one);
    ``precision``: :attr:`~shdeconv.models.DeconvNet.precision` of the pass."""
    loaded = model if isinstance(model, LoadedModel) else LoadedModel.load(model)
    net = loaded.fresh()
    fm = attach_subject(net, subject)
    tile = loaded.patch_size
    batch = auto_batch(net, device, tile, precision=precision)
    fodf, iso = predict_volume(net, subject.signal, subject.mask, tile=tile, overlap=DEFAULT_TILE_OVERLAP,
                               device=device, progress=progress, sw_batch_size=batch, precision=precision)
    return fodf, iso, network_iso_names(fm, iso)


def network_iso_names(fm: ForwardModel, iso: np.ndarray | None) -> tuple[str, ...]:
    """Names of a network's isotropic output channels ``iso`` ``[..., T]``: the acquisition's
    tissues (``fm.iso_names``), or GM and CSF as a network with the linear head was trained."""
    if iso is None:
        return ()
    return tuple(fm.iso_names) if iso.shape[-1] == fm.n_iso else ("gm", "csf")[: iso.shape[-1]]


def build_network(subject: Subject, config: NetworkConfig,
                  single_shell: tuple[str, ...] | None = None) -> tuple[DeconvNet, ForwardModel]:
    """The network and the forward model for a subject's acquisition (in the subject's frame)."""
    fm, rows, input_rows = acquisition_model(subject.bvals, subject.directions, subject.responses,
                                             config.response_lmax, single_shell=head_tissues(config, single_shell))
    init = linear_deconvolution(fm) if config.head == "linear" or config.inputs == "linear" else None
    net = DeconvNet(config, subject.directions, rows, input_rows, n_iso=fm.n_iso, init_matrix=init)
    return net, fm
