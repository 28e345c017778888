"""The ``defects`` entry of the pipeline table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finescale.pipelines import Pipeline
from finescale.pipelines.defects.bench import METRICS, bench_variants
from finescale.pipelines.defects.config import DefectsConfig
from finescale.pipelines.defects.predict import DefectsPredictor
from finescale.pipelines.defects.task import DefectsTask
from finescale.pipelines.defects.workflow import evaluate, train
from finescale.synth.defects import generate_defects


def example_inputs(manifest: Path, n: int = 3) -> tuple[list[Path], dict[str, Any]]:
    """The first ``n`` views of the first tool in a COCO file: what ``predict`` takes (one tool's views)."""
    images = json.loads(Path(manifest).read_text())["images"]
    first = sorted(images, key=lambda im: (str(im.get("group_id")), im.get("view", 0)))
    tool = [im for im in first if im.get("group_id") == first[0].get("group_id")][:n]
    return [Path(manifest).parent / im["file_name"] for im in tool], {}


def data_overrides(data_dir: Path) -> dict[str, Any]:
    """Soft Teacher's unlabeled images of a synthesised folder."""
    unlabeled = Path(data_dir) / "unlabeled.json"
    return {"unlabeled_json": str(unlabeled)} if unlabeled.exists() else {}


PIPELINE = Pipeline(
    name="defects",
    config_class=DefectsConfig,
    task_class=DefectsTask,
    predictor_class=DefectsPredictor,
    train=train,
    evaluate=evaluate,
    synth=generate_defects,
    bench_variants=bench_variants,
    bench_metrics=METRICS,
    example_inputs=example_inputs,
    data_overrides=data_overrides,
    smoke={  # epoch-based here, so that the contract's "one epoch, then --resume for a second" applies
        "epochs": 1,
        "max_steps": 0,
        "val_every_n_steps": 0,
        "unsup_ratio": 1,
        "unsup_warmup_steps": 0,  # Soft Teacher's step from the first batch
        "image_height": 96,
        "image_width": 48,
        "fpn_channels": 16,
        "pool_tokens": 32,
        "mv_heads": 2,
        "mv_layers": 1,
        "rpn_post_nms_train": 50,
        "rpn_post_nms_test": 30,
        "roi_batch_per_image": 32,
        "limit_val_batches": 1,
    },
    smoke_n=12,
    demo_size=80,  # tools (8 views each)
    # the quick preset's 200 steps took about 12 minutes on 2 cores; neither 60 steps nor 20 find a defect, so the
    # demo trains 20 (10 supervised, 10 Soft Teacher): it shows the pipeline's outputs within the demo's 20 minutes
    demo_overrides={"max_steps": 20, "val_every_n_steps": 10, "unsup_warmup_steps": 10},
)
