"""Memory a phantom will need, estimated from its grid before anything is allocated.

A voxel size typed in micrometres instead of millimetres (``--voxel-size
0.05``) asks for a grid of 10^10 voxels: refused at once with the estimate,
rather than after minutes of swapping or with a MemoryError.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrinets.io.nifti import physical_memory_bytes

__all__ = ["check_grid_memory"]


def check_grid_memory(shape: Sequence[float], *, bytes_per_voxel: float, name: str, value: str) -> None:
    """Raise ValueError when simulating on ``shape`` needs more than this machine's memory.

    Parameters
    ----------
    shape : sequence of float
        The grid the simulation will allocate (voxels per axis).
    bytes_per_voxel : float
        Peak memory per voxel of that grid, measured on a small grid.
    name, value : str
        The argument that made the grid and its value, for the message
        (``"voxel_size"``, ``"0.05 mm"``): it starts with ``name``.
    """
    dims = [int(np.ceil(s)) for s in shape]
    needed = float(np.prod(dims, dtype=np.float64)) * bytes_per_voxel
    available = physical_memory_bytes()
    if needed > available:
        raise ValueError(f"{name} {value} makes a {' x '.join(map(str, dims))} grid that needs about "
                         f"{needed / 2**30:,.0f} GiB, more than this machine's {available / 2**30:,.0f} GiB of memory")
