"""The defects predictor's grouping of inputs into tools and its options (no training: a freshly built task)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finescale.errors import FinescaleError
from finescale.pipelines.defects.config import DefectsConfig
from finescale.pipelines.defects.predict import DefectsPredictor, group_inputs
from finescale.pipelines.defects.task import DefectsTask


def views(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in range(n):
        path = folder / f"t1_v{v}.png"
        Image.fromarray(np.full((36, 12, 3), 40 * v, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_a_folder_is_one_tool_and_loose_files_fill_tools_in_order(tmp_path: Path):
    folder_views = views(tmp_path / "tool", 2)
    loose = views(tmp_path / "loose", 5)
    groups = group_inputs([tmp_path / "tool", *loose], views=2)
    assert groups[0] == folder_views  # the folder's images, sorted by name
    assert groups[1:] == [loose[0:2], loose[2:4], loose[4:5]]  # loose files in runs of `views`


def test_a_folder_with_more_views_than_the_model_is_refused(tmp_path: Path):
    views(tmp_path / "tool", 3)
    with pytest.raises(FinescaleError, match="holds 3 images; a tool has at most 2 views"):
        group_inputs([tmp_path / "tool"], views=2)


@pytest.fixture(scope="module")
def task() -> DefectsTask:
    cfg = DefectsConfig(data={"categories": ["a", "b"], "image_height": 64, "image_width": 32, "views": 2},
                        model={"fpn_channels": 16, "pool_tokens": 8, "mv_heads": 2, "mv_layers": 1})  # fmt: skip
    return DefectsTask(cfg.model_dump(mode="json"))


def test_options_reach_the_model(task: DefectsTask):
    predictor = DefectsPredictor(task, score_threshold=0.9, device="cpu")
    assert predictor.model is task.teacher and predictor.model.box_head.score_threshold == 0.9
    assert DefectsPredictor(task, predict_with="student", device="cpu").model is task.model
    with pytest.raises(FinescaleError, match="--predict-with takes teacher or student"):
        DefectsPredictor(task, predict_with="ema", device="cpu")


def test_an_unreadable_view_is_answered_with_an_error_and_the_others_predicted(task: DefectsTask, tmp_path: Path):
    good = views(tmp_path / "v", 1)[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    answers = DefectsPredictor(task, device="cpu").predict([good, bad])
    assert [a["view"] for a in answers] == [0, 1] and "error" in answers[1] and "error" not in answers[0]
    assert set(answers[0]) >= {"boxes", "labels", "scores", "tool"}
