"""Write ``src/shdeconv/direction/peak_sphere.npz``: the vertices and edges of DIPY's
``default_sphere`` (the 362-vertex hemisphere of its 724-point repulsion sphere), the peak
extraction's default, so that extracting peaks does not import ``dipy.data`` (about a second).
``tests/direction/test_peaks.py`` checks the file against the installed DIPY.

Usage: python scripts/make_peak_sphere.py
"""

from pathlib import Path

import numpy as np
from dipy.data import default_sphere

OUT = Path(__file__).resolve().parents[1] / "src" / "shdeconv" / "direction" / "peak_sphere.npz"

if __name__ == "__main__":
    np.savez_compressed(OUT, vertices=np.asarray(default_sphere.vertices, dtype=np.float64),
                        edges=np.asarray(default_sphere.edges, dtype=np.int64))
    print(f"wrote {OUT}")
