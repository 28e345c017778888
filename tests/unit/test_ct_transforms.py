"""CT transforms: windows, masks, 3 channels, slice selection, denoising, Rand* augmentations, batch mixing."""

import numpy as np
import pytest
import torch

from finescale.data import ct_transforms as T
from finescale.data.ct_augment import (
    CTAugment,
    RandBreathingMotion,
    RandElastic,
    RandElastic3D,
    RandLungTexture,
    RandScannerNoise,
)
from finescale.data.ct_transforms import CLAHE, NLMeansDenoise, clahe, lung_z_range, nlm_denoise, slice_indices
from finescale.data.ct_windows import (
    BONE,
    LUNG,
    MEDIASTINUM,
    Window,
    adaptive_window,
    apply_window,
    body_and_lung_masks,
    hu_window,
    three_channel,
)
from finescale.data.mixing import ct_aware_mix, cutmix, mixup


def phantom(depth: int = 6, size: int = 48, *, lung_hu: float = -850.0, body_hu: float = 40.0) -> np.ndarray:
    """Air, a round body, two elliptic lungs: (depth, size, size) float32 HU."""
    yy, xx = np.mgrid[:size, :size] / size
    body = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.4**2
    lungs = ((yy - 0.5) / 0.25) ** 2 + ((xx - 0.33) / 0.1) ** 2 < 1
    lungs |= ((yy - 0.5) / 0.25) ** 2 + ((xx - 0.67) / 0.1) ** 2 < 1
    plane = np.where(lungs, lung_hu, np.where(body, body_hu, -1000.0)).astype(np.float32)
    return np.repeat(plane[None], depth, axis=0)


def test_windows_at_known_hu():
    hu = np.array([-2000, -1350, -975, -600, 150, 3000], dtype=np.int16)
    np.testing.assert_allclose(hu_window(hu, LUNG.level, LUNG.width), [0, 0, 0.25, 0.5, 1, 1])
    assert hu_window(hu, -600, 1500).dtype == np.float32
    np.testing.assert_allclose(apply_window(np.array([-160.0, 40.0, 240.0]), MEDIASTINUM), [0, 0.5, 1])
    np.testing.assert_allclose(apply_window(np.array([-500.0, 400.0, 850.0, 1300.0]), BONE), [0, 0.5, 0.75, 1])
    assert (LUNG.lower, LUNG.upper) == (-1350.0, 150.0)
    np.testing.assert_array_equal(hu_window(hu, *LUNG), apply_window(hu, LUNG))  # a Window unpacks to level, width
    assert LUNG.shifted(60) == Window(-540.0, 1500.0)
    with pytest.raises(ValueError):
        hu_window(hu, 0, 0)


def test_masks_find_the_body_and_the_lungs_it_encloses():
    volume = phantom()
    body, lung = body_and_lung_masks(volume)
    np.testing.assert_array_equal(lung, volume == -850)
    np.testing.assert_array_equal(body, volume == 40)
    body2d, lung2d = body_and_lung_masks(volume[0])
    np.testing.assert_array_equal(lung2d, lung[0])
    assert body2d.shape == (48, 48)


def test_adaptive_window_on_a_synthetic_histogram():
    volume = phantom(depth=4)
    rng = np.random.default_rng(0)
    _, lung = body_and_lung_masks(volume)
    body = volume == 40
    lung_values = rng.uniform(-950, -750, lung.sum()).astype(np.float32)  # all stay below -500: still lung
    body_values = rng.uniform(-100, 300, body.sum()).astype(np.float32)  # all stay above -500: still body
    volume[lung], volume[body] = lung_values, body_values
    window = adaptive_window(volume)
    lower, upper = np.percentile(lung_values, 1), np.percentile(body_values, 95)
    assert window.lower == pytest.approx(lower, abs=1e-3) and window.upper == pytest.approx(upper, abs=1e-3)
    assert lower == pytest.approx(-948, abs=2) and upper == pytest.approx(280, abs=3)  # U(-950,-750), U(-100,300)
    shifted = adaptive_window(volume + 50)  # a scanner's calibration offset moves the window with it
    assert shifted.level == pytest.approx(window.level + 50, abs=1e-3)
    assert shifted.width == pytest.approx(window.width, abs=1e-3)
    assert adaptive_window(np.full((2, 8, 8), 40.0)) == LUNG  # no lung: the fixed window


def test_three_channel_windows_and_adjacent_slices():
    volume = np.stack([np.full((4, 5), hu, np.float32) for hu in (-900, -600, -300, 0, 300)])
    windows = three_channel(volume, [0, 2], mode="windows")
    assert windows.shape == (2, 3, 4, 5) and windows.dtype == np.float32
    np.testing.assert_allclose(windows[1, :, 0, 0], [apply_window(-300.0, w) for w in (LUNG, MEDIASTINUM, BONE)])
    own = three_channel(volume, [2], window=Window(-300, 600))  # e.g. an adaptive window replaces the lung channel
    np.testing.assert_allclose(own[0, :, 0, 0], [0.5, *windows[1, 1:, 0, 0]])
    adjacent = three_channel(volume, [0, 2, 4], mode="adjacent", window=Window(-600, 1200))
    # slice 0 and 4 clamp their missing neighbour; the window maps -1200..0 onto 0..1
    np.testing.assert_allclose(adjacent[:, :, 0, 0], [[0.25, 0.25, 0.5], [0.5, 0.75, 1.0], [1.0, 1.0, 1.0]])
    with pytest.raises(ValueError):
        three_channel(volume, [0], mode="stacked")


def test_slice_indices_uniform_random_and_ranges():
    np.testing.assert_array_equal(slice_indices(120, 12), np.arange(5, 120, 10))
    first = slice_indices(120, 12, "random", np.random.default_rng(3))
    np.testing.assert_array_equal(first, slice_indices(120, 12, "random", np.random.default_rng(3)))
    assert not np.array_equal(first, slice_indices(120, 12, "random", np.random.default_rng(4)))
    assert ((first >= np.arange(0, 120, 10)) & (first < np.arange(10, 130, 10))).all()  # one per bin
    within = slice_indices(100, 4, z_range=(20, 60))
    np.testing.assert_array_equal(within, [25, 35, 45, 55])
    assert len(slice_indices(5, 12)) == 12 and slice_indices(5, 12).max() <= 4  # short volumes repeat slices
    with pytest.raises(ValueError):
        slice_indices(10, 4, z_range=(5, 12))
    lung = np.zeros((10, 20, 20), bool)
    lung[2:8, :10, :10] = True
    lung[1, 0, 0] = True  # a trachea-sized speck is not lung range
    assert lung_z_range(lung) == (2, 8)
    assert lung_z_range(np.zeros((7, 3, 3), bool)) == (0, 7)


def test_nl_means_and_clahe_keep_shape_dtype_and_range():
    rng = np.random.default_rng(0)
    flat = np.clip(0.5 + 0.05 * rng.standard_normal((2, 3, 32, 32)), 0, 1)  # float64 in, float32 out
    for transform in (NLMeansDenoise(), CLAHE(), nlm_denoise, clahe):
        out = transform(flat)
        assert out.shape == flat.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(NLMeansDenoise(strength=9)(flat), nlm_denoise(flat, strength=9))
    assert NLMeansDenoise(strength=15)(flat).std() < 0.5 * flat.std()  # noise removed
    ramp = np.tile(np.linspace(0.45, 0.55, 64, dtype=np.float32), (64, 1))
    assert np.ptp(CLAHE()(ramp)) > 1.3 * np.ptp(ramp)  # contrast stretched, within the clip limit
    assert np.ptp(CLAHE(clip_limit=8.0)(ramp)) > np.ptp(CLAHE()(ramp))  # a higher limit stretches more
    assert CLAHE()(ramp).shape == (64, 64)


def _volume() -> np.ndarray:
    return phantom(depth=8, size=40) + np.linspace(0, 60, 40, dtype=np.float32)  # some in-plane structure


RANDOM_TRANSFORMS = {
    "scanner_noise": lambda: RandScannerNoise(prob=1.0),
    "breathing": lambda: RandBreathingMotion(prob=1.0, max_shift=6.0),
    "lung_texture": lambda: RandLungTexture(prob=1.0),
    "elastic": lambda: RandElastic(prob=1.0, spacing=(12.0, 12.0), magnitude_range=(2.0, 4.0)),
    "elastic3d": lambda: RandElastic3D(prob=1.0),
}


@pytest.mark.parametrize("name", sorted(RANDOM_TRANSFORMS))
def test_rand_transforms_are_reproducible_under_a_seed(name):
    volume = _volume()
    make = RANDOM_TRANSFORMS[name]
    a = make().set_random_state(seed=0)(volume)
    b = make().set_random_state(seed=0)(volume)
    c = make().set_random_state(seed=1)(volume)
    assert a.shape == volume.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, volume)
    off = make()
    off.prob = 0.0
    unchanged = off(volume)
    np.testing.assert_array_equal(unchanged, volume)
    assert not np.shares_memory(unchanged, volume)  # a cached input is never handed on to be changed in place


def test_ct_augment_composes_the_rand_transforms_and_follows_a_generator():
    volume = _volume()
    augment = CTAugment(prob=1.0, elastic=True)
    first = augment(volume, np.random.default_rng(5))
    np.testing.assert_array_equal(first, augment(volume, np.random.default_rng(5)))
    assert not np.array_equal(first, augment(volume, np.random.default_rng(6)))
    assert first.shape == volume.shape and first.dtype == np.float32
    assert [type(t).__name__ for t in augment.compose.transforms] == [
        "RandElastic",
        "RandLungTexture",
        "RandBreathingMotion",
        "RandScannerNoise",
    ]
    assert T.CTAugment is CTAugment and T.hu_window is hu_window  # one namespace for the pipeline


def test_scanner_noise_grows_with_attenuation():
    volume = np.concatenate([np.full((1, 64, 64), hu, np.float32) for hu in (-1000, 0, 1000)])
    noisy = RandScannerNoise(prob=1.0, quantum_std=(20.0, 20.0), electronic_std=(0.0, 0.0)).set_random_state(0)
    std = (noisy(volume) - volume).std(axis=(1, 2))
    assert std[0] == 0  # air: no photons absorbed, no quantum noise; electronic noise off
    assert std[1] == pytest.approx(20, rel=0.05) and std[2] == pytest.approx(20 * np.sqrt(2), rel=0.05)


def test_breathing_moves_one_run_of_slices_and_lung_texture_stays_in_the_lungs():
    volume = _volume()
    moved = RandBreathingMotion(prob=1.0, max_shift=6.0, max_fraction=0.5).set_random_state(2)(volume)
    changed = np.flatnonzero(np.abs(moved - volume).max(axis=(1, 2)) > 0)
    assert len(changed) >= 1 and np.array_equal(changed, np.arange(changed[0], changed[-1] + 1))
    textured = RandLungTexture(prob=1.0).set_random_state(0)(volume)
    _, lung = body_and_lung_masks(volume)
    np.testing.assert_array_equal(textured[~lung], volume[~lung])
    assert np.abs(textured[lung] - volume[lung]).max() > 0
    with pytest.raises(ValueError):
        RandBreathingMotion(prob=1.0)(volume[0])


def test_elastic_deforms_every_slice_alike():
    volume = _volume()[:2]
    volume[1] = volume[0]
    out = RandElastic(prob=1.0, magnitude_range=(3.0, 5.0)).set_random_state(0)(volume)
    np.testing.assert_allclose(out[0], out[1])
    assert RandElastic(prob=1.0).set_random_state(0)(volume[0]).shape == volume[0].shape


def _batch(b: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample i is constant i + 1 everywhere, its target one-hot i: lam and partner can be read off the output."""
    x = torch.arange(1.0, b + 1).view(b, 1, 1, 1).expand(b, 2, size, size).clone()
    return x, torch.eye(b)


def _lam_and_partner(y_mixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lam = y_mixed.diagonal()
    rest = y_mixed - torch.diag(lam)
    return lam, rest.argmax(dim=1)


def test_mixup_targets_and_images_are_the_same_convex_combination():
    x, y = _batch()
    xm, ym = mixup(x, y, 0.4, torch.Generator().manual_seed(0))
    lam, partner = _lam_and_partner(ym)
    assert ((lam >= 0) & (lam <= 1)).all() and torch.allclose(ym.sum(1), torch.ones(6))
    expected = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[partner]
    informative = lam < 1  # a sample paired with itself keeps its one-hot target: no partner to read off
    torch.testing.assert_close(xm[informative], expected[informative])
    xm2, ym2 = mixup(x, y, 0.4, torch.Generator().manual_seed(0))
    assert torch.equal(xm, xm2) and torch.equal(ym, ym2)


@pytest.mark.parametrize("seed", range(12))
def test_cutmix_lambda_is_the_true_pasted_area_share(seed):
    x, y = _batch()
    xm, ym = cutmix(x, y, 1.0, torch.Generator().manual_seed(seed))
    pasted = (xm != x).float().mean(dim=(1, 2, 3))  # exact: partners differ everywhere
    lam = ym.diagonal()
    informative = lam < 1  # a sample paired with itself keeps its one-hot target
    torch.testing.assert_close(1 - lam[informative], pasted[informative])
    assert torch.allclose(ym.sum(1), torch.ones(6)) and (ym >= 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_ct_aware_mix_pastes_only_inside_both_masks(seed):
    b, s, size = 5, 3, 24
    x = torch.arange(1.0, b + 1).view(b, 1, 1, 1, 1).expand(b, s, 3, size, size).clone()
    y = torch.eye(b)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.tensor([[12, 12], [10, 14], [14, 10], [12, 8], [8, 12]])
    masks = torch.stack([(yy - cy) ** 2 + (xx - cx) ** 2 < 64 for cy, cx in centres.tolist()])  # (B, H, W)
    masks = masks[:, None, None].expand(b, s, 1, size, size)
    xm, ym = ct_aware_mix(x, y, masks, 1.0, torch.Generator().manual_seed(seed))
    lam, partner = _lam_and_partner(ym)
    changed = xm != x  # (B, S, 3, H, W)
    both = masks & masks[partner]
    assert not (changed & ~both).any()  # nothing outside the anatomy both samples share
    assert torch.equal(xm[changed], x[partner][changed])  # the partner's own pixels, at the same place
    pasted_share = changed[:, :, :1].flatten(1).sum(1) / masks.flatten(1).sum(1)
    informative = lam < 1  # a sample paired with itself keeps its one-hot target: no partner to read off
    torch.testing.assert_close(1 - lam[informative], pasted_share[informative].float())
    assert torch.allclose(ym.sum(1), torch.ones(b)) and ((lam >= 0) & (lam <= 1)).all()
    with pytest.raises(ValueError):
        ct_aware_mix(x, y, masks[:, 0, 0], 1.0)
