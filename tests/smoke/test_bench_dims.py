"""``finescale bench dims`` end to end on tiny data: every variant of a seed starts from the same two classifiers,
trained once per seed (``bench_shared``), and the table summarises the runs' own test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tests.conftest import finescale, finescale_in_process

from finescale.pipelines import get_pipeline

pytestmark = pytest.mark.slow

TINY_YAML = """
trainer: {epochs: 1, batch_size: 8, accelerator: cpu, progress: false, limit_train_batches: 2}
model: {image_size: 48, embedding_dim: 16}
regress: {attention_dim: 16, head_dim: 16, mc_samples: 2}
"""
SEEDS = (0, 1)
VARIANTS = ("baseline", "recipe")
EMBEDDERS = {"company": "model.company_embedder.", "model": "model.model_embedder."}


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_bench_dims_shares_the_classifiers_of_each_seed(implants: Path, tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    out = tmp_path / "bench"
    seeds, variants = ",".join(map(str, SEEDS)), ",".join(VARIANTS)
    args = ["bench", "dims", "--out", out, "--data", implants, "--seeds", seeds, "--variants", variants]
    finescale(*args, "--config", config)

    # the classifiers: two per seed, all in shared/, and no classifier run anywhere else
    shared = {seed: {t: out / "shared" / f"seed{seed}" / t / "best.ckpt" for t in EMBEDDERS} for seed in SEEDS}
    classifier_runs = sorted(
        p.parent for p in out.rglob("config.yaml") if yaml.safe_load(p.read_text())["stage"] == "classify"
    )
    assert classifier_runs == sorted(path.parent for paths in shared.values() for path in paths.values())
    for seed in SEEDS:
        for target, path in shared[seed].items():
            cfg = yaml.safe_load((path.parent / "config.yaml").read_text())
            assert cfg["classify"]["target"] == target and cfg["trainer"]["seed"] == seed
    assert not torch.equal(  # each seed trained its own
        state(shared[0]["company"])["model.classifier.weight"], state(shared[1]["company"])["model.classifier.weight"]
    )

    bench_metrics = get_pipeline("dims").bench_metrics
    rows = {row["variant"]: row for row in json.loads((out / "bench.json").read_text())["rows"]}
    assert set(rows) == set(VARIANTS)
    for name in VARIANTS:
        runs = {seed: out / "runs" / name / f"seed{seed}" for seed in SEEDS}
        for seed, run in runs.items():
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            assert cfg["stage"] == "regress" and cfg["trainer"]["seed"] == seed
            # every variant of a seed points at that seed's shared classifiers and trained none of its own
            assert Path(cfg["regress"]["company_checkpoint"]) == shared[seed]["company"]
            assert Path(cfg["regress"]["model_checkpoint"]) == shared[seed]["model"]
            assert not (run / "company").exists() and not (run / "model").exists()
            # trained once, before the variants: no shared checkpoint is newer than a variant's
            newest = max(path.stat().st_mtime for path in shared[seed].values())
            assert newest < (run / "best.ckpt").stat().st_mtime
            # and started from them: one epoch keeps the embedding models frozen, so their weights are the shared ones
            regressor = state(run / "best.ckpt")
            for target, prefix in EMBEDDERS.items():
                classifier = state(shared[seed][target])
                assert classifier and all(
                    torch.equal(regressor[prefix + key.removeprefix("model.")], value)
                    for key, value in classifier.items()
                )
        baseline = yaml.safe_load((runs[0] / "config.yaml").read_text())["regress"]
        assert (baseline["embedding_source"] == "none") == (name == "baseline")
        # the row is the mean and spread of the runs' own test metrics (names read from the pipeline)
        tested = [json.loads((run / "test_metrics.json").read_text()) for run in runs.values()]
        for metric in bench_metrics:
            values = np.array([t[metric] for t in tested], dtype=float)
            assert rows[name]["seeds"] == list(SEEDS)
            assert rows[name][f"{metric}_mean"] == pytest.approx(values.mean(), abs=1e-9), (name, metric)
            assert rows[name][f"{metric}_std"] == pytest.approx(values.std(ddof=1), abs=1e-9), (name, metric)
    table = (out / "bench.md").read_text()
    assert all(f"| {name} |" in table for name in VARIANTS) and (out / "bench.png").exists()

    # a second call finds everything done: neither the classifiers nor the variants train again (in this process:
    # it has nothing to train)
    stamps = {p: p.stat().st_mtime for p in out.rglob("*.ckpt")}
    finescale_in_process(*args, "--config", config)
    assert {p: p.stat().st_mtime for p in out.rglob("*.ckpt")} == stamps
