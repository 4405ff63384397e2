"""NIfTI and gradient-table I/O, input validation, the orientation frame and file formats."""

from ._atomic import (
    atomic_path,
    atomic_save_nifti,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    refuse_earlier_outputs,
)
from ._checkpoint import check_fingerprint, checkpoint_step, fingerprint
from ._gradients import (
    fsl_bvecs_to_world,
    tensor_conditioning,
    voxel_axes_rotation,
    voxel_to_world_matrix,
    world_to_fsl_bvecs,
)
from ._nifti import (
    B0_THRESHOLD,
    Beyond,
    DWIData,
    MaskedImage,
    bvals_shells,
    combine_masks,
    load_dwi,
    load_mask,
    make_mask,
    mask_box,
)
from ._peaks_file import read_peaks, write_peaks
from ._response_file import read_response_file, write_response_file
from ._sidecar import write_sidecars
from ._validate import InputError

__all__ = [
    "atomic_path",
    "B0_THRESHOLD",
    "Beyond",
    "DWIData",
    "InputError",
    "MaskedImage",
    "atomic_save_nifti",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "bvals_shells",
    "check_fingerprint",
    "checkpoint_step",
    "check_output_dir",
    "check_output_file",
    "combine_masks",
    "fingerprint",
    "fsl_bvecs_to_world",
    "load_dwi",
    "load_mask",
    "make_mask",
    "mask_box",
    "read_peaks",
    "read_response_file",
    "refuse_earlier_outputs",
    "tensor_conditioning",
    "voxel_axes_rotation",
    "voxel_to_world_matrix",
    "world_to_fsl_bvecs",
    "write_peaks",
    "write_response_file",
    "write_sidecars",
]
