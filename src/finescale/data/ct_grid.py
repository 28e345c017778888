"""The deterministic front of CT preprocessing: a volume in HU at its own spacing -> a fixed int16 grid.

``to_grid`` resamples to a target spacing and centre crops / pads to a target shape in one trilinear pass
(``scipy.ndimage.affine_transform``, order 1), then rounds and clips to CT-CLIP's int16 range [-1024, 3071].

Why scipy and not torch's ``F.interpolate`` (CT-CLIP's): the pack workers then need neither torch nor a GPU, the result
is the same bit for bit on every machine (no thread- or device-dependent reductions), and sampling straight onto the
cropped grid never builds the full resampled volume (CT-CLIP's 480 x 480 x 240 grid is cropped from up to ~600^3).
Why trilinear: it is CT-CLIP's and MONAI's default for images; higher spline orders overshoot at the air/body edge.

The output grid is centred on the volume's centre: output voxel ``o`` sits at ``(o - (n_out - 1) / 2) * spacing`` mm
from it, i.e. resampling then centre crop / pad up to the half-voxel rounding of an integer crop offset. Voxels
outside the volume are air (-1024 HU).

Downsampling (e.g. 0.75 mm -> 2.5 mm in the quick preset) first applies a Gaussian low-pass with
``sigma = (step - 1) / 2`` voxels along each axis downsampled by 1.5x or more (scikit-image's ``resize`` rule;
``antialias=False`` turns it off): plain trilinear sampling at a 3x step reads one voxel in three, so noise aliases
and a one-voxel calcification survives or vanishes depending on where the grid falls. CT-CLIP's full grid hardly
downsamples (0.7 -> 0.75 mm in-plane), so there the filter is skipped and the result is plain trilinear.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from finescale.data.ct_io import CTVolume
from finescale.errors import FinescaleError

__all__ = ["AIR_HU", "HU_MAX", "HU_MIN", "to_grid"]

# CT-CLIP's int16 HU range: air at -1024, 12 bits above it (dense bone and metal saturate at 3071).
HU_MIN = -1024
HU_MAX = 3071
AIR_HU = HU_MIN

# Below this downsampling step sigma < 0.25 voxel: the kernel's side taps weigh < 0.04 %, not worth a pass.
MIN_FILTERED_STEP = 1.5
# scipy's gaussian_filter reaches 4 sigma (truncate=4.0): a crop this wide around the sampled region filters the same.
_GAUSS_TRUNCATE = 4.0


def _check_triplet(value: Sequence[float], what: str, source: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (3,) or not np.isfinite(array).all() or (array <= 0).any():
        raise FinescaleError(f"{source}: {what} must be three positive numbers (z, y, x), got {list(value)}")
    return array


def _sampled_bounds(offset: float, step: float, n_out: int, n_in: int, margin: int) -> tuple[int, int]:
    """Input index range [lo, hi) that trilinear sampling of ``n_out`` points at ``offset + step * o`` touches,
    widened by ``margin`` and clipped to the volume."""
    first, last = offset, offset + step * (n_out - 1)
    lo = max(0, math.floor(first) - margin)
    hi = min(n_in, math.floor(last) + 2 + margin)
    return lo, max(lo, hi)


def to_grid(
    volume: CTVolume,
    *,
    spacing: Sequence[float],
    shape: Sequence[int],
    antialias: bool = True,
) -> np.ndarray:
    """Resample ``volume`` to ``spacing`` and centre crop / pad it to ``shape``.

    Args:
        volume: ``hu`` (Z, Y, X) float32 HU with ``spacing`` (z, y, x) mm.
        spacing: target voxel spacing (z, y, x) in mm, e.g. CT-CLIP's (1.5, 0.75, 0.75).
        shape: target shape (Z, Y, X) in voxels, e.g. CT-CLIP's (240, 480, 480).
        antialias: Gaussian low-pass along each axis that is downsampled (see the module docstring).

    Returns:
        (Z, Y, X) int16 HU in [-1024, 3071]; voxels outside the volume are -1024 (air).
    """
    out_spacing = _check_triplet(spacing, "grid spacing", volume.source)
    in_spacing = _check_triplet(volume.spacing, "voxel spacing", volume.source)
    out_shape = tuple(int(n) for n in shape)
    if len(out_shape) != 3 or min(out_shape) <= 0:
        raise FinescaleError(f"{volume.source}: grid shape must be three positive integers (z, y, x), got {shape}")
    hu = volume.hu
    if hu.ndim != 3 or min(hu.shape) == 0:
        raise FinescaleError(f"{volume.source}: expected a non-empty (Z, Y, X) volume, got shape {hu.shape}")

    step = out_spacing / in_spacing  # input voxels per output voxel
    offset = (np.asarray(hu.shape) - 1) / 2 - step * (np.asarray(out_shape) - 1) / 2
    sigma = np.where(step >= MIN_FILTERED_STEP, (step - 1) / 2, 0.0) if antialias else np.zeros(3)

    # Filter and sample only the part of the volume the grid covers (the crop), plus the filter's reach.
    bounds = [
        _sampled_bounds(offset[a], step[a], out_shape[a], hu.shape[a], math.ceil(_GAUSS_TRUNCATE * sigma[a]))
        for a in range(3)
    ]
    if any(hi <= lo for lo, hi in bounds):  # the grid misses the volume entirely (cannot happen for centred grids)
        return np.full(out_shape, AIR_HU, dtype=np.int16)
    region = hu[tuple(slice(lo, hi) for lo, hi in bounds)]
    offset -= [lo for lo, _ in bounds]
    if sigma.any():
        region = ndimage.gaussian_filter(region.astype(np.float32, copy=False), sigma, mode="nearest")

    grid = ndimage.affine_transform(
        region,
        step,  # a diagonal matrix: each axis scales independently
        offset=offset,
        output_shape=out_shape,
        output=np.float32,
        order=1,
        mode="constant",  # no interpolation beyond the volume's edge: outside is cval
        cval=AIR_HU,
        prefilter=False,
    )
    np.nan_to_num(grid, copy=False, nan=AIR_HU, posinf=HU_MAX, neginf=HU_MIN)
    np.clip(grid, HU_MIN, HU_MAX, out=grid)
    return np.rint(grid, out=grid).astype(np.int16)
