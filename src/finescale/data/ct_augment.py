"""Random CT augmentations of the ``ct`` recipe, MONAI style: ``Rand*`` transforms that own their RNG.

Each is a :class:`monai.transforms.RandomizableTransform`: it fires with probability ``prob``, draws everything from
its own ``self.R`` and is made reproducible by ``set_random_state(seed)`` (MONAI's ``Compose`` calls it on each
member). Inputs are HU, int16 or float, a volume or slice stack (Z, H, W) (one slice (H, W) where noted); outputs
are float32 HU of the same shape. They run on HU, before windowing, because the physics they mimic is in HU: quantum
noise grows with attenuation, lung texture lives between -950 and -500 HU.
"""

from __future__ import annotations

import numpy as np
from monai.transforms import Compose, Rand2DElastic, Rand3DElastic, RandomizableTransform
from scipy import ndimage

from finescale.data.ct_windows import body_and_lung_masks

WATER_TO_AIR_HU = 1000.0


def _float32(hu: np.ndarray) -> np.ndarray:
    """A float32 copy, also when nothing fires: the input may be a cached array that must never be shared."""
    return np.array(hu, dtype=np.float32, copy=True)


class RandScannerNoise(RandomizableTransform):
    """Scanner noise: quantum (photon-count) noise that grows with attenuation plus electronic Gaussian noise.

    noise = q sqrt(mu) n1 + e n2, with mu = max(HU + 1000, 0) / 1000 the attenuation relative to water, n1, n2
    standard normal, q ~ U(``quantum_std``) and e ~ U(``electronic_std``) in HU per call. Fewer photons reach the
    detector behind dense tissue, and Poisson counts have a standard deviation of sqrt(mean); we approximate that in
    the image (per voxel, not per ray), so water gets q HU of quantum noise, bone about 1.4 q and air none. Any shape.
    """

    def __init__(
        self,
        prob: float = 0.5,
        *,
        quantum_std: tuple[float, float] = (5.0, 25.0),
        electronic_std: tuple[float, float] = (0.0, 10.0),
    ) -> None:
        super().__init__(prob)
        self.quantum_std, self.electronic_std = quantum_std, electronic_std
        self._noise: np.ndarray | None = None

    def randomize(self, hu: np.ndarray) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        quantum, electronic = self.R.uniform(*self.quantum_std), self.R.uniform(*self.electronic_std)
        attenuation = np.maximum(np.asarray(hu, dtype=np.float32) + WATER_TO_AIR_HU, 0.0) / WATER_TO_AIR_HU
        n1, n2 = self.R.standard_normal((2, *hu.shape)).astype(np.float32)
        self._noise = quantum * np.sqrt(attenuation) * n1 + electronic * n2

    def __call__(self, hu: np.ndarray, randomize: bool = True) -> np.ndarray:
        if randomize:
            self.randomize(hu)
        if not self._do_transform:
            return _float32(hu)
        return _float32(hu) + self._noise


class RandBreathingMotion(RandomizableTransform):
    """Breathing (motion) artifact on a run of consecutive slices of a (Z, H, W) stack.

    A breath during the acquisition displaces the anatomy of the slices acquired meanwhile: a run of up to
    ``max_fraction`` of the slices is shifted in plane by d(z) = A sin(pi t), t going 0 -> 1 over the run (one breath
    in and out), A ~ U(0, ``max_shift`` px), mostly anterior-posterior (the image's y, +-0.3 rad). Each displaced
    slice keeps a ghost of where the anatomy was: (1 - g) shifted + g original, g ~ U(0, ``max_ghost``), the double
    contours of a diaphragm or a vessel that moved while the slice was measured.
    """

    def __init__(
        self, prob: float = 0.3, *, max_shift: float = 4.0, max_fraction: float = 0.3, max_ghost: float = 0.4
    ) -> None:
        super().__init__(prob)
        self.max_shift, self.max_fraction, self.max_ghost = max_shift, max_fraction, max_ghost
        self._start, self._shifts, self._ghost = 0, np.zeros((0, 2)), 0.0

    def randomize(self, hu: np.ndarray) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        depth = hu.shape[0]
        length = self.R.randint(1, max(1, int(round(self.max_fraction * depth))) + 1)
        self._start = self.R.randint(0, depth - length + 1)
        amplitude = self.R.uniform(0.0, self.max_shift)
        angle = self.R.normal(0.0, 0.3)  # from the y axis: chest wall and diaphragm move front-back
        phase = np.sin(np.pi * (np.arange(length) + 0.5) / length)
        self._shifts = amplitude * phase[:, None] * np.array([np.cos(angle), np.sin(angle)])  # (length, 2): dy, dx
        self._ghost = self.R.uniform(0.0, self.max_ghost)

    def __call__(self, hu: np.ndarray, randomize: bool = True) -> np.ndarray:
        """(Z, H, W) HU -> float32 (Z, H, W)."""
        if hu.ndim != 3:
            raise ValueError(f"breathing motion needs a (Z, H, W) stack, got shape {hu.shape}")
        if randomize:
            self.randomize(hu)
        out = _float32(hu)
        if not self._do_transform:
            return out
        for k, shift in enumerate(self._shifts):
            z = self._start + k
            moved = ndimage.shift(out[z], shift, order=1, mode="nearest")
            out[z] = (1.0 - self._ghost) * moved + self._ghost * out[z]
        return out


class RandLungTexture(RandomizableTransform):
    """Lung texture variation: low-amplitude, spatially correlated noise and a density shift inside the lungs.

    Inside the lung mask (given, or :func:`~finescale.data.ct_windows.body_and_lung_masks`), adds a Gaussian-smoothed
    random field of correlation length s ~ U(``correlation_px``) px (in plane), scaled to a standard deviation
    a ~ U(0, ``max_amplitude``) HU, plus a uniform shift ~ U(+-``max_density_shift``) HU (the depth of inspiration
    changes lung density). Amplitudes stay well below the findings' contrast (ground glass is +200..+400 HU), so the
    label holds. Takes (Z, H, W) or (H, W).
    """

    def __init__(
        self,
        prob: float = 0.5,
        *,
        max_amplitude: float = 30.0,
        correlation_px: tuple[float, float] = (1.0, 3.0),
        max_density_shift: float = 20.0,
    ) -> None:
        super().__init__(prob)
        self.max_amplitude, self.correlation_px, self.max_density_shift = (
            max_amplitude,
            correlation_px,
            max_density_shift,
        )
        self._field: np.ndarray | None = None

    def randomize(self, hu: np.ndarray) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        sigma = self.R.uniform(*self.correlation_px)
        amplitude = self.R.uniform(0.0, self.max_amplitude)
        shift = self.R.uniform(-self.max_density_shift, self.max_density_shift)
        white = self.R.standard_normal(hu.shape).astype(np.float32)
        smooth = ndimage.gaussian_filter(white, sigma=(0.0,) * (hu.ndim - 2) + (sigma, sigma))
        self._field = amplitude * smooth / max(float(smooth.std()), 1e-6) + shift

    def __call__(self, hu: np.ndarray, lung: np.ndarray | None = None, randomize: bool = True) -> np.ndarray:
        """``hu`` (Z, H, W) or (H, W); ``lung`` bool of the same shape, computed when not given."""
        if randomize:
            self.randomize(hu)
        out = _float32(hu)
        if not self._do_transform:
            return out
        lung = body_and_lung_masks(hu)[1] if lung is None else lung
        return np.where(lung, out + self._field, out)


class _ElasticWrapper(RandomizableTransform):
    """Fires with ``prob`` and delegates to a MONAI elastic transform that draws from this transform's own RNG."""

    def __init__(self, prob: float, elastic: RandomizableTransform) -> None:
        super().__init__(prob)
        self._elastic = elastic
        self._elastic.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> _ElasticWrapper:
        super().set_random_state(seed, state)
        self._elastic.set_random_state(state=self.R)  # one stream: whether to fire, then MONAI's field
        return self

    def _deform(self, channels_first: np.ndarray) -> np.ndarray:
        self.randomize(None)
        if not self._do_transform:
            return channels_first
        return np.asarray(self._elastic(channels_first, randomize=True), dtype=np.float32)


class RandElastic(_ElasticWrapper):
    """In-plane elastic deformation (MONAI's ``Rand2DElastic``), the same field on every slice of a (Z, H, W) stack
    or on one (H, W) slice, so that adjacent-slice channels stay aligned.

    Control points every ``spacing`` px, displaced by ``magnitude_range`` (MONAI's units); the defaults move the
    pixels of a 112-px slice by 1.2-2 px per axis on average, 6 px at most (measured over 3 seeds).
    Out-of-field pixels repeat the border (air), never 0 HU, which would be water.
    """

    def __init__(
        self,
        prob: float = 0.3,
        *,
        spacing: tuple[float, float] = (28.0, 28.0),
        magnitude_range: tuple[float, float] = (1.0, 3.0),
    ) -> None:
        elastic = Rand2DElastic(spacing=spacing, magnitude_range=magnitude_range, prob=1.0, padding_mode="border")
        super().__init__(prob, elastic)

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        hu = _float32(hu)
        return self._deform(hu[None])[0] if hu.ndim == 2 else self._deform(hu)


class RandElastic3D(_ElasticWrapper):
    """Volumetric elastic deformation (MONAI's ``Rand3DElastic``) of a (Z, Y, X) volume, for the 3-D baseline.

    A random field smoothed by a Gaussian of ``sigma_range`` voxels and scaled by ``magnitude_range``; the defaults
    move the voxels of a 24 x 64 x 64 volume by 0.5-0.9 voxel per axis on average (measured over 3 seeds).
    Out-of-field voxels repeat the border.
    """

    def __init__(
        self,
        prob: float = 0.3,
        *,
        sigma_range: tuple[float, float] = (5.0, 7.0),
        magnitude_range: tuple[float, float] = (100.0, 300.0),
    ) -> None:
        elastic = Rand3DElastic(
            sigma_range=sigma_range, magnitude_range=magnitude_range, prob=1.0, padding_mode="border"
        )
        super().__init__(prob, elastic)

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        return self._deform(_float32(hu)[None])[0]


class CTAugment:
    """The recipe's CT augmentations in physical order on a (Z, H, W) HU stack: the anatomy varies first (elastic
    when ``elastic``, lung texture), then the patient breathes, then the scanner adds its noise. Each fires with
    ``prob``; pass per-transform objects to :class:`monai.transforms.Compose` for other settings.

    ``__call__(hu, rng)`` reseeds every member from ``rng`` (a numpy Generator, e.g. a DataLoader worker's per-item
    one) before drawing, so the same rng state gives the same augmentation; without ``rng`` the members' own states
    run on (``set_random_state(seed)`` makes them reproducible).
    """

    def __init__(self, *, prob: float = 0.5, elastic: bool = False) -> None:
        anatomy = [RandElastic(prob)] if elastic else []
        self.compose = Compose([*anatomy, RandLungTexture(prob), RandBreathingMotion(prob), RandScannerNoise(prob)])

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> CTAugment:
        self.compose.set_random_state(seed, state)
        return self

    def __call__(self, hu: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """(Z, H, W) HU -> float32 (Z, H, W) HU."""
        if rng is not None:
            self.compose.set_random_state(seed=int(rng.integers(2**31 - 1)))
        return np.asarray(self.compose(_float32(hu)), dtype=np.float32)
