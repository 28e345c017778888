import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import complete_box_iou_loss

from finescale.nn.correlation import (
    LearnableTemperature,
    dense_correlation,
    pooled_correlation,
    rot90_stack,
    same_padding,
)
from finescale.nn.fpn import FeaturePyramid
from finescale.pipelines.puzzle.config import PuzzleDataConfig, PuzzleModelConfig
from finescale.pipelines.puzzle.model import PuzzleLocator, position_target
from finescale.pipelines.puzzle.whole_puzzle import encode_tiled, locate, tile_starts

TINY = {"fpn_channels": 16, "regressor_width": 16}


def batch(size: int = 2, window: int = 64, piece: int = 40) -> dict:
    torch.manual_seed(0)
    return {
        "piece": torch.rand(size, 3, piece, piece),
        "puzzle": torch.rand(size, 3, window, window),
        "box": torch.tensor([[0.1, 0.2, 0.45, 0.5], [0.5, 0.55, 0.8, 0.9]])[:size],
        "rotation": torch.tensor([1, 3])[:size],
    }


def test_feature_pyramid_levels_and_strides(tmp_path):
    fpn = FeaturePyramid(name="test_resnet", out_channels=16)
    levels = fpn(torch.rand(2, 3, 96, 128))
    assert fpn.strides == (8, 16, 32) and fpn.out_channels == 16
    assert [tuple(x.shape) for x in levels] == [(2, 16, 12, 16), (2, 16, 6, 8), (2, 16, 3, 4)]
    assert [x.shape for x in fpn(torch.rand(1, 1, 64, 64))] == [x.shape for x in fpn(torch.rand(1, 3, 64, 64))]
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in fpn.body.state_dict().items()}}, path)
    loaded = FeaturePyramid(name="test_resnet", out_channels=16, weights=path)
    for key, value in fpn.body.state_dict().items():
        torch.testing.assert_close(loaded.body.state_dict()[key], value)


def brute_force_correlation(templates: np.ndarray, puzzle: np.ndarray, zero_mean: bool = False) -> np.ndarray:
    """(B, K, C, h, w), (B, C, H, W) -> (B, K, H, W) by explicit loops over positions."""
    b, k, _, h, w = templates.shape
    height, width = puzzle.shape[2:]
    left, right, top, bottom = same_padding(h, w)
    padded = np.pad(puzzle, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out = np.zeros((b, k, height, width))
    for i in range(b):
        for j in range(k):
            t = templates[i, j]
            for y in range(height):
                for x in range(width):
                    patch = padded[i, :, y : y + h, x : x + w]
                    if zero_mean:  # per-channel means of the template and of the window removed
                        patch = patch - patch.mean(axis=(1, 2), keepdims=True)
                        t = templates[i, j] - templates[i, j].mean(axis=(1, 2), keepdims=True)
                    norm = np.linalg.norm(patch) * np.linalg.norm(t)
                    out[i, j, y, x] = (patch * t).sum() / norm if norm > 1e-9 else 0.0
    return out


def test_dense_correlation_matches_a_brute_force_loop():
    torch.manual_seed(0)
    puzzle = torch.randn(2, 5, 9, 11, dtype=torch.float64)
    templates = torch.randn(2, 3, 5, 3, 4, dtype=torch.float64)  # even width: asymmetric 'same' padding
    expected = brute_force_correlation(templates.numpy(), puzzle.numpy())
    np.testing.assert_allclose(dense_correlation(templates, puzzle).numpy(), expected, atol=1e-9)
    np.testing.assert_allclose(dense_correlation(templates, puzzle, max_rows=2).numpy(), expected, atol=1e-9)
    # one puzzle broadcast against every sample's templates
    shared = dense_correlation(templates, puzzle[:1])
    np.testing.assert_allclose(shared[1].numpy(), brute_force_correlation(templates[1:].numpy(), puzzle[:1].numpy())[0])
    assert dense_correlation(templates[:, 0], puzzle).shape == (2, 1, 9, 11)
    zero_mean = brute_force_correlation(templates.numpy(), puzzle.numpy(), zero_mean=True)
    np.testing.assert_allclose(dense_correlation(templates, puzzle, zero_mean=True).numpy(), zero_mean, atol=1e-9)


def test_dense_correlation_peaks_at_the_centre_of_a_cut_template():
    torch.manual_seed(1)
    puzzle = torch.randn(1, 8, 20, 24)
    piece = puzzle[:, :, 5:10, 7:12]  # 5 x 5, centre cell (7, 9)
    corr = dense_correlation(piece, puzzle)[0, 0]
    assert divmod(int(corr.argmax()), 24) == (7, 9)
    assert corr.max() == pytest.approx(1.0, abs=1e-5) and corr.min() >= -1.0 - 1e-5


def test_pooled_correlation_is_cosine_with_the_mean_descriptor():
    torch.manual_seed(2)
    piece, puzzle = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 5, 7)
    expected = F.cosine_similarity(piece.mean(dim=(2, 3))[:, :, None, None], puzzle, dim=1)
    torch.testing.assert_close(pooled_correlation(piece, puzzle)[:, 0], expected)


@pytest.mark.parametrize("k", range(4))
def test_matching_the_four_rotations_finds_the_turn(k: int):
    torch.manual_seed(3)
    puzzle = torch.randn(1, 8, 24, 24)
    region = puzzle[:, :, 4:11, 9:16]  # 7 x 7, centre cell (7, 12)
    piece = torch.from_numpy(np.ascontiguousarray(np.rot90(region.numpy(), k, axes=(2, 3))))  # numpy's convention
    corr = dense_correlation(rot90_stack(piece), puzzle)[0]  # (4, H, W)
    rotation, rest = divmod(int(corr.argmax()), 24 * 24)
    assert (rotation, *divmod(rest, 24)) == (k, 7, 12)


def test_temperatures():
    seed_form = LearnableTemperature(4.0, divide=True)
    log_form = LearnableTemperature(10.0)
    x = torch.tensor([0.5])
    torch.testing.assert_close(seed_form(x), torch.tensor([0.125]))
    torch.testing.assert_close(log_form(x), torch.tensor([5.0]))


def test_position_target_is_a_distribution_centred_on_the_cell():
    u, v = torch.tensor([2.3]), torch.tensor([4.9])
    gauss, onehot = position_target(u, v, (6, 5), 1.0), position_target(u, v, (6, 5), 0.0)
    torch.testing.assert_close(gauss.sum(), torch.tensor(1.0))
    assert divmod(int(gauss.argmax()), 5) == (4, 2) == divmod(int(onehot.argmax()), 5)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"rotation": "head"},
        {"shared_backbone": False},
        {"rotation_input": "features", "target_sigma": 0.0},
        {"norm": "group", "zero_mean": True, "piece_mask": True},
        {"head": "regression"},
        {"head": "regression", "rotation": "head", "shared_backbone": False},
    ],
)
def test_losses_are_finite_and_backpropagate(changes: dict):
    model = PuzzleLocator.from_config(PuzzleModelConfig(**TINY, **changes))
    b = batch()
    losses = model.loss(b)
    parts = {"pos", "box"} if changes.get("head", "dense") == "dense" else {"box", "ciou", "l1"}
    assert set(losses) == {"loss", "rot"} | parts
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    grads = [p.grad for p in model.puzzle_encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert (model.piece_encoder is None) == changes.get("shared_backbone", True)
    pred = model.predict(b)
    assert pred["box"].shape == (2, 4) and pred["rotation_probs"].shape == (2, 4)
    assert torch.all((pred["rotation"] >= 0) & (pred["rotation"] < 4))
    assert torch.all((pred["confidence"] >= 0) & (pred["confidence"] <= 1 + 1e-6))
    maps = model.correlation_maps(b)
    assert len(maps["levels"]) == 3 and maps["probs"].shape[-2:] == (8, 8)


def test_position_loss_with_hard_targets_is_class_index_cross_entropy():
    # target_sigma = 0: the probability target is one-hot at (template, cell holding the box centre)
    model = PuzzleLocator.from_config(PuzzleModelConfig(**TINY, target_sigma=0.0)).eval()
    b = batch()
    logits = model(b)["logits"]  # (B, K, H, W)
    _, _, h, w = logits.shape
    centre = (b["box"][:, :2] + b["box"][:, 2:]) / 2 * 64 / model.stride  # (B, 2) x, y in cells
    cell = centre[:, 1].floor().long() * w + centre[:, 0].floor().long()
    index = model._template_index(b["rotation"]) * h * w + cell
    torch.testing.assert_close(model.loss(b)["pos"], F.cross_entropy(logits.flatten(1), index))


def test_ciou_part_is_torchvisions_complete_box_iou_loss():
    model = PuzzleLocator.from_config(PuzzleModelConfig(**TINY, head="regression")).eval()
    b = batch()
    losses = model.loss(b)
    out = model(b)
    pred = model.head.box([m[torch.arange(2), b["rotation"]] for m in out["maps"]])
    torch.testing.assert_close(losses["ciou"], complete_box_iou_loss(pred, b["box"], reduction="mean"))
    torch.testing.assert_close(losses["box"], 0.5 * losses["ciou"] + 0.5 * F.smooth_l1_loss(pred, b["box"]))


def test_a_few_steps_on_one_batch_reduce_the_loss():
    torch.manual_seed(0)
    model = PuzzleLocator.from_config(PuzzleModelConfig(**TINY))
    b = batch()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = model.loss(b)["loss"]
        first = float(loss.detach()) if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(model.loss(b)["loss"].detach()) < 0.7 * first


def test_tiled_encoding_equals_one_pass_when_one_tile_covers_the_image():
    model = PuzzleLocator.from_config(PuzzleModelConfig(**TINY)).eval()
    image = np.random.default_rng(0).random((96, 128, 3), dtype=np.float32)
    with torch.no_grad():
        direct = model.encode_puzzle(torch.from_numpy(image).permute(2, 0, 1)[None])
    for a, b in zip(encode_tiled(model, image, tile=128, overlap=64), direct, strict=True):
        torch.testing.assert_close(a, b)
    assert tile_starts(1000, 256, 64) == [0, 192, 384, 576, 744]
    tiled = encode_tiled(model, np.zeros((320, 256, 3), np.float32), tile=128, overlap=64)
    assert [tuple(x.shape[-2:]) for x in tiled] == [(40, 32), (20, 16), (10, 8)]


def test_locate_on_a_large_puzzle_runs_tiled_and_returns_boxes_inside():
    torch.manual_seed(0)
    model = PuzzleLocator.from_config(PuzzleModelConfig(**TINY))
    rng = np.random.default_rng(0)
    noise = rng.random((250, 375, 3)).astype(np.float32)
    puzzle = (np.kron(noise, np.ones((4, 4, 1))) * 255).astype(np.uint8)  # 1000 x 1500 texture
    pieces = [
        np.rot90(puzzle[y : y + 90, x : x + 80], k) for k, (y, x) in enumerate([(10, 20), (800, 1300), (400, 700)])
    ]
    cfg = PuzzleDataConfig(tile=256, tile_overlap=64, piece_chunk=2, band_mb=8)

    def puzzle_inputs(cfg: PuzzleDataConfig) -> tuple[list[dict], list[tuple[int, int]]]:
        """``locate``'s results and the (H, W) of every input the puzzle encoder saw that was not a piece batch."""
        seen: list[tuple[int, int]] = []
        side = cfg.piece_window

        def record(module: torch.nn.Module, args: tuple) -> None:
            if tuple(args[0].shape[-2:]) != (side, side):
                seen.append(tuple(args[0].shape[-2:]))

        handle = model.puzzle_encoder.register_forward_pre_hook(record)
        try:
            return locate(model, puzzle, pieces, cfg), seen
        finally:
            handle.remove()

    _, whole = puzzle_inputs(cfg.model_copy(update={"tile": 2048}))
    assert len(whole) == 1  # one tile larger than the rescaled puzzle: encoded in one piece
    full_h, full_w = whole[0]
    results, tiles = puzzle_inputs(cfg)
    assert len(tiles) > 1 and all(h <= cfg.tile and w <= cfg.tile for h, w in tiles)  # really tiled
    assert sum(h * w for h, w in tiles) >= full_h * full_w  # and the tiles cover the whole rescaled puzzle
    assert {h for h, _ in tiles} <= {cfg.tile, full_h} and {w for _, w in tiles} <= {cfg.tile, full_w}
    assert len(results) == 3
    for r in results:
        x1, y1, x2, y2 = r["box"]
        assert 0 <= x1 <= x2 <= 1500 and 0 <= y1 <= y2 <= 1000
        assert r["rotation"] in range(4) and 0 <= r["confidence"] <= 1


def test_channels_last_inference_places_pieces_as_the_plain_model_does():
    """The predictors run the locator with channels-last weights (faster on CPU); the answers must not change."""
    from types import SimpleNamespace

    from finescale.pipelines.puzzle.predict import inference_model

    torch.manual_seed(0)
    model = PuzzleLocator.from_config(PuzzleModelConfig(**TINY)).eval()
    rng = np.random.default_rng(1)
    puzzle = (np.kron(rng.random((60, 80, 3)), np.ones((4, 4, 1))) * 255).astype(np.uint8)
    pieces = [np.rot90(puzzle[y : y + 48, x : x + 40], k) for k, (y, x) in enumerate([(8, 16), (150, 250)])]
    cfg = PuzzleDataConfig(piece_input="photo")
    reference = copy.deepcopy(model)  # an independent plain copy: inference_model converts ``model`` in place
    fast = inference_model(SimpleNamespace(model=model))
    kernels = [(a, b) for a, b in zip(reference.parameters(), fast.parameters(), strict=True) if a.dim() == 4]
    assert kernels and all(a.is_contiguous() for a, _ in kernels)  # the copy stayed in the default format
    spatial = [(a, b) for a, b in kernels if a.shape[-2:] != (1, 1)]  # 1 x 1 kernels look alike in both formats
    assert spatial and all(
        b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous() for _, b in spatial
    )
    assert all(torch.equal(a, b) for a, b in kernels)  # same numbers, another layout
    plain = locate(reference, puzzle, pieces, cfg, proposals=3)
    for a, b in zip(plain, locate(fast, puzzle, pieces, cfg, proposals=3), strict=True):
        np.testing.assert_allclose(a["box"], b["box"], atol=1e-2)
        assert a["rotation"] == b["rotation"]
        assert [(p.rotation, p.x, p.y) for p in a["proposals"]] == [(p.rotation, p.x, p.y) for p in b["proposals"]]
