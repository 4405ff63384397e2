"""NIfTI and gradient-table I/O, input validation, the orientation frame and file formats."""

from ._gradients import fsl_bvecs_to_world, voxel_to_world_matrix, world_to_fsl_bvecs

__all__ = ["fsl_bvecs_to_world", "voxel_to_world_matrix", "world_to_fsl_bvecs"]
