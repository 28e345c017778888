"""What made a quick-preset puzzle training epoch cost more than it needs (benchmarks/puzzle_epoch.py measures it):
deterministic mode filling every new tensor with NaN first, the correlation's grouped convolution and the backbone
in the default memory layout (slow backward on CPU), and validation running the model twice per batch."""

from __future__ import annotations

import warnings

import torch

from finescale.engine.trainer import seed_everything
from finescale.nn.correlation import dense_correlation
from finescale.pipelines.puzzle.config import PuzzleConfig
from finescale.pipelines.puzzle.task import PuzzleTask

TINY = {"model": {"fpn_channels": 16, "regressor_width": 16}}


def batch(size: int = 2, window: int = 64, piece: int = 40) -> dict:
    torch.manual_seed(0)
    return {
        "piece": torch.rand(size, 3, piece, piece),
        "puzzle": torch.rand(size, 3, window, window),
        "box": torch.tensor([[0.1, 0.2, 0.45, 0.5], [0.5, 0.55, 0.8, 0.9]])[:size],
        "rotation": torch.tensor([1, 3])[:size],
    }


def test_deterministic_mode_without_filling_new_memory():
    before = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    try:
        seed_everything(0)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = before[1]


def test_the_model_trains_in_channels_last_with_the_same_losses():
    task = PuzzleTask(PuzzleConfig(**TINY).model_dump(mode="json"))
    convs = [p for p in task.model.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    plain = PuzzleTask(PuzzleConfig(**TINY).model_dump(mode="json"))
    plain.model.load_state_dict(task.model.state_dict())
    plain.model = plain.model.to(memory_format=torch.contiguous_format)
    b = batch()
    mine, theirs = task.model.loss(b), plain.model.loss(b)
    for key in theirs:
        torch.testing.assert_close(mine[key], theirs[key], rtol=1e-4, atol=1e-5)
    mine["loss"].backward()


def test_grouped_correlation_in_channels_last_equals_one_puzzle_at_a_time():
    torch.manual_seed(0)
    pieces, puzzles = torch.randn(3, 4, 8, 5, 5, requires_grad=True), torch.randn(3, 8, 12, 12, requires_grad=True)
    together = dense_correlation(pieces, puzzles, zero_mean=True)
    alone = torch.cat([dense_correlation(pieces[i : i + 1], puzzles[i : i + 1], zero_mean=True) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    together.square().sum().backward()
    assert pieces.grad is not None and puzzles.grad is not None


def test_validation_runs_the_model_once_per_batch():
    task = PuzzleTask(PuzzleConfig(**TINY).model_dump(mode="json")).eval()
    calls = []
    task.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    b = batch()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        task.validation_step(b, 0)
        assert len(calls) == 1
        losses, prediction = task.model.loss_and_predict(b)
        for key, value in task.model.loss(b).items():
            torch.testing.assert_close(losses[key], value)
        for key, value in task.model.predict(b).items():
            torch.testing.assert_close(prediction[key], value)
