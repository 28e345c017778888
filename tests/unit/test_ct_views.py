"""The ct pipeline's random tail (views.py): the slab it reads, and that working on the slab alone changes nothing
the model sees at evaluation and touches no other slice in training."""

import numpy as np
import torch

from finescale.config import build_config
from finescale.data.ct_transforms import slice_indices
from finescale.data.ct_windows import LUNG, adaptive_window, three_channel
from finescale.pipelines.ct.config import CTConfig
from finescale.pipelines.ct.views import SliceViews, slab_indices


def volume(depth: int = 40, size: int = 48, seed: int = 0) -> np.ndarray:
    """A chest-like stack that changes along z, so that a wrong slice shows: (depth, size, size) int16 HU."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    body = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.4**2
    lungs = ((yy - 0.5) / 0.25) ** 2 + ((np.abs(xx - 0.5) - 0.17) / 0.1) ** 2 < 1
    planes = []
    for z in range(depth):
        plane = np.where(lungs, -850.0 + 5 * z, np.where(body, 40.0 + 3 * z, -1000.0))
        planes.append(plane + rng.normal(0, 15, plane.shape))
    return np.stack(planes).astype(np.int16)


def config(**overrides) -> CTConfig:
    base = {"image_size": 48, "progressive_sizes": [], "ct_augment": False, "flips": False}
    return build_config(CTConfig, preset="quick", config_file=None, overrides={**base, **overrides})


def test_slab_holds_the_chosen_slices_and_their_clamped_neighbours():
    index = np.array([0, 5, 5, 9])
    assert slab_indices(index, 10, neighbours=False).tolist() == [0, 5, 9]
    assert slab_indices(index, 10, neighbours=True).tolist() == [0, 1, 4, 5, 6, 8, 9]


def test_evaluation_views_equal_the_whole_volume_computation():
    vol = volume()
    index = slice_indices(vol.shape[0], 12, mode="uniform")
    for channels in ("windows", "adjacent"):
        for window in ("fixed", "adaptive"):
            cfg = config(channels=channels, window=window, slices_per_volume=12)
            got = SliceViews(cfg, train=False)(vol, np.random.default_rng(0))["slices"]
            hu = vol.astype(np.float32)
            # the adaptive window comes from the slab, as documented: the slab here is what the view reads
            slab = slab_indices(index, vol.shape[0], neighbours=channels == "adjacent")
            win = adaptive_window(hu[slab]) if window == "adaptive" else LUNG
            want = torch.from_numpy(three_channel(hu, index, mode=channels, window=win))
            torch.testing.assert_close(got, want, msg=f"{channels}, {window}")


def test_training_views_touch_only_the_slab():
    vol = volume().astype(np.float32)
    cfg = config(ct_augment=True, elastic=True, window="adaptive", channels="adjacent", slices_per_volume=6)
    views = SliceViews(cfg, train=True)
    index = slice_indices(vol.shape[0], 6, mode="random", rng=np.random.default_rng(3))
    poisoned = np.full_like(vol, np.nan)  # any read of a slice outside the slab would show as NaN in the output
    slab = slab_indices(index, vol.shape[0], neighbours=True)
    poisoned[slab] = vol[slab]
    augment, seen = views.augment, []
    views.augment = lambda hu, rng: seen.append(hu.shape) or augment(hu, rng)  # records what gets augmented
    out = views(poisoned, np.random.default_rng(3))["slices"]
    assert seen == [(len(slab), 48, 48)]  # the slab alone, not the 40-slice volume
    assert out.shape == (6, 3, 48, 48) and torch.isfinite(out).all()
    again = views(poisoned, np.random.default_rng(3))["slices"]
    torch.testing.assert_close(out, again)  # the same rng state gives the same augmentation


def test_views_resize_to_the_current_side():
    cfg = config(image_size=32)
    out = SliceViews(cfg, train=False)(volume(), np.random.default_rng(0))["slices"]
    assert out.shape == (12, 3, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1
