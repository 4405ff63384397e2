"""Local tractography (DIPY) from shdeconv's world-frame fODF files."""

from ._track import fodf_to_voxel_frame, track, track_seeds, tracked_streamlines

__all__ = ["fodf_to_voxel_frame", "track", "track_seeds", "tracked_streamlines"]
