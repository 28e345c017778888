"""Two simulated CT scanners: slice-thickness and in-plane blur of the reconstruction kernel, edge enhancement of
sharp kernels, beam-hardening cupping, a water-calibration offset, and quantum plus electronic noise.

Quantum noise follows the photon count: its variance grows as ``exp(mu * L)`` with the water-equivalent path ``L``
through the patient along the two main view directions (after automatic exposure control has levelled each slice),
so wide, dense slices and the body's centre are noisier and the lungs quieter. Electronic noise is a constant floor.
Both are spatially correlated by the kernel: smooth kernels give coarse, weaker grain; sharp ones fine, stronger grain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

HU_RANGE = (-1024.0, 3071.0)  # what a 12-bit CT reconstruction stores
MU_WATER_PER_MM = 0.01  # effective attenuation driving the noise-vs-path relation (after exposure control)


@dataclass(frozen=True)
class Kernel:
    """A reconstruction kernel."""

    name: str
    blur_vox: float  # in-plane PSF Gaussian sigma (voxels)
    sharpen: float  # unsharp-mask gain: the edge overshoot of sharp (lung, bone) kernels
    grain_vox: float  # noise correlation Gaussian sigma (voxels)
    noise_gain: float  # noise standard deviation relative to the scanner's reference kernel


@dataclass(frozen=True)
class Scanner:
    """One scanner model; ``spacing`` is its nominal voxel size (z, y, x) mm at the default 64 x 128 x 128 grid."""

    name: str
    manufacturer: str
    spacing: tuple[float, float, float]
    quantum_hu: float  # quantum noise std (HU) at a reference-sized patient, reference kernel
    electronic_hu: float  # electronic noise std (HU)
    hu_offset: float  # water calibration error (HU)
    cupping_hu: float  # beam-hardening depression at the body's centre (HU)
    kernels: tuple[Kernel, ...]


SCANNERS: dict[str, Scanner] = {
    "A": Scanner(
        "A", "Finescale Medical Alpha", (5.0, 2.5, 2.5), quantum_hu=16.0, electronic_hu=4.0, hu_offset=0.0,
        cupping_hu=8.0, kernels=(Kernel("STANDARD", 0.75, 0.0, 0.9, 1.0), Kernel("LUNG", 0.45, 0.5, 0.6, 1.6)),
    ),
    "B": Scanner(
        "B", "Finescale Medical Beta", (4.0, 2.3, 2.3), quantum_hu=26.0, electronic_hu=9.0, hu_offset=10.0,
        cupping_hu=25.0, kernels=(Kernel("B30f", 0.9, 0.0, 1.1, 0.8), Kernel("B70f", 0.35, 0.8, 0.5, 2.0)),
    ),
}  # fmt: skip


def _water_path_mm(hu: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Water-equivalent path lengths (mm) along x for every (z, y) row and along y for every (z, x) column."""
    water = np.clip((hu + 1000.0) / 1000.0, 0.0, 3.0)
    return water.sum(axis=2) * spacing[2], water.sum(axis=1) * spacing[1]


def noise_sigma(hu: np.ndarray, spacing: tuple[float, float, float], scanner: Scanner, kernel: Kernel) -> np.ndarray:
    """Noise standard deviation (HU) per voxel, (Z, Y, X): quantum (path-dependent) and electronic in quadrature."""
    along_x, along_y = _water_path_mm(hu, spacing)
    # exposure control levels each slice on its mean path; what is left is the variation within the slice
    level = 0.5 * (along_x.max(axis=1) + along_y.max(axis=1))[:, None]
    relative = 0.5 * (
        np.exp(MU_WATER_PER_MM * (along_x - level))[:, :, None]
        + np.exp(MU_WATER_PER_MM * (along_y - level))[:, None, :]
    )
    size = np.clip(level / 300.0, 0.5, 2.0)[:, :, None]  # exposure control only partly compensates large patients
    quantum = scanner.quantum_hu * kernel.noise_gain * np.sqrt(relative * size)
    return np.sqrt(quantum**2 + scanner.electronic_hu**2).astype(np.float32)


def simulate(
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    scanner: Scanner,
    kernel: Kernel,
    rng: np.random.Generator,
    *,
    thickness_mm: float,
    body_radius: np.ndarray,
) -> np.ndarray:
    """The scanner's image of the object ``hu`` (Z, Y, X) float32 HU; ``body_radius`` (Y, X) or broadcastable is 0 at
    the body's centre and 1 at its skin (for cupping). Returns float32 HU clipped to the 12-bit range."""
    sigma_z = thickness_mm / (2.355 * spacing[0])
    image = ndimage.gaussian_filter1d(hu, sigma_z, axis=0, mode="nearest") if sigma_z > 0.3 else hu.copy()
    image = ndimage.gaussian_filter(image, (0, kernel.blur_vox, kernel.blur_vox), mode="nearest")
    if kernel.sharpen > 0:
        image += kernel.sharpen * (image - ndimage.gaussian_filter(image, (0, 1.5, 1.5), mode="nearest"))
    inside = body_radius < 1
    image -= scanner.cupping_hu * np.clip(1 - body_radius**2, 0, 1) * inside
    grain = ndimage.gaussian_filter(
        rng.standard_normal(hu.shape, dtype=np.float32), (0.3, kernel.grain_vox, kernel.grain_vox)
    )
    grain /= grain.std() + 1e-6
    image += grain * noise_sigma(hu, spacing, scanner, kernel) + scanner.hu_offset
    return np.clip(image, *HU_RANGE).astype(np.float32)
