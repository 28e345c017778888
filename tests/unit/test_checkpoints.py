"""Rebuilding a task from a checkpoint file: the config it carries, brought up to date for older checkpoints."""

from __future__ import annotations

import pytest
import torch

from finescale.engine.checkpoints import load_task
from finescale.errors import FinescaleError
from finescale.pipelines.puzzle.config import PuzzleConfig
from finescale.pipelines.puzzle.task import PuzzleTask


def _save(path, config: dict, state: dict) -> None:
    torch.save({"hyper_parameters": {"config": config}, "state_dict": state}, path)


@pytest.fixture
def puzzle_task() -> PuzzleTask:
    torch.manual_seed(0)
    return PuzzleTask(PuzzleConfig(model={"fpn_channels": 16}).model_dump(mode="json"))


def test_a_checkpoint_from_before_piece_input_loads_with_the_photo_it_was_trained_on(tmp_path, puzzle_task):
    config = puzzle_task.cfg.model_dump(mode="json")
    del config["data"]["piece_input"]
    _save(tmp_path / "old.ckpt", config, puzzle_task.state_dict())
    old = load_task(tmp_path / "old.ckpt")
    assert old.cfg.data.piece_input == "photo"
    for name, value in puzzle_task.state_dict().items():
        torch.testing.assert_close(old.state_dict()[name], value)


@pytest.mark.parametrize("piece_input", ["cutout", "photo"])
def test_a_recorded_piece_input_is_kept(tmp_path, puzzle_task, piece_input):
    config = puzzle_task.cfg.model_dump(mode="json")
    config["data"]["piece_input"] = piece_input
    _save(tmp_path / "new.ckpt", config, puzzle_task.state_dict())
    assert load_task(tmp_path / "new.ckpt").cfg.data.piece_input == piece_input


def test_an_unreadable_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(FinescaleError, match="cannot read checkpoint"):
        load_task(tmp_path / "bad.ckpt")
