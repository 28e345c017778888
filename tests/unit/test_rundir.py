"""The run directory's checks (``engine/rundir.py``): a folder left by an attempt that failed before its first
checkpoint does not block the next ``train``; a run with a checkpoint is protected; the pipeline of a run is read from
its config.yaml without torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from finescale.engine.rundir import check_run_dir, checkpoint_pipeline, require_pipeline
from finescale.errors import FinescaleError


def leftovers(run: Path) -> None:
    """What a training that failed before its first checkpoint leaves: config.yaml and empty logs."""
    (run / "logs" / "tb").mkdir(parents=True)
    (run / "logs" / "csv").mkdir(parents=True)
    (run / "config.yaml").write_text("pipeline: length\n")
    (run / "logs" / "tb" / "events.out.tfevents.1796175812.vm.14387.0").write_bytes(b"")
    (run / "logs" / "csv" / "hparams.yaml").write_text("{}\n")


def test_a_folder_without_checkpoint_is_reused_and_its_stale_logs_removed(tmp_path: Path):
    run = tmp_path / "run"
    leftovers(run)
    (run / "notes.txt").write_text("mine")  # a file the user keeps there is not ours to remove
    assert check_run_dir(run, resume=False) is None
    assert not list((run / "logs").rglob("*.*")), "the failed attempt's event and log files are gone"
    assert (run / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["last.ckpt", "best.ckpt"])
def test_a_folder_with_a_checkpoint_is_protected(tmp_path: Path, name: str):
    leftovers(tmp_path)
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(FinescaleError, match="already holds a run; pass --resume"):
        check_run_dir(tmp_path, resume=False)
    assert list((tmp_path / "logs" / "tb").iterdir()), "nothing removed from a real run"


def test_resume_needs_last_ckpt(tmp_path: Path):
    with pytest.raises(FinescaleError, match="--resume given but .*last.ckpt does not exist"):
        check_run_dir(tmp_path, resume=True)
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert check_run_dir(tmp_path, resume=True) == tmp_path / "last.ckpt"


def test_the_pipeline_of_a_run_comes_from_its_config(tmp_path: Path):
    (tmp_path / "best.ckpt").write_bytes(b"x")
    assert checkpoint_pipeline(tmp_path) is None  # no config.yaml: the checkpoint decides (checkpoints.load_task)
    (tmp_path / "config.yaml").write_text("pipeline: length\n")
    assert checkpoint_pipeline(tmp_path / "best.ckpt") == "length"
    require_pipeline(tmp_path, "length")
    with pytest.raises(FinescaleError, match=r"best\.ckpt is a length checkpoint, not a dims one"):
        require_pipeline(tmp_path, "dims")


def test_only_the_first_process_of_a_distributed_run_removes_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    leftovers(tmp_path)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP process that Lightning started beside the first
    assert check_run_dir(tmp_path, resume=False) is None
    assert list((tmp_path / "logs" / "tb").iterdir()), "the first process's fresh logs are not touched"
