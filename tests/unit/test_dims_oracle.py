"""dims oracle embeddings (the ceiling of the embeddings): the regressor sees the class embeddings of the TRUE company
and model, whatever the classifiers predict; the bench rows that measure it; and the per-image results of ``eval``
that say whether the classifiers were right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from finescale.config import build_config
from finescale.errors import FinescaleError
from finescale.pipelines.dims.bench import bench_variants
from finescale.pipelines.dims.config import DimsConfig, DimsModelConfig
from finescale.pipelines.dims.metrics import per_image_classes, per_image_results, regression_metrics
from finescale.pipelines.dims.model import DimsRegressor, ImplantClassifier, class_embedding
from finescale.pipelines.dims.predict import DimsPredictor
from finescale.pipelines.dims.task import DimsRegressionTask

SIZE = 48
COMPANIES = ["A", "B", "C"]
MODELS = ["A1", "A2", "B1", "C1", "C2", "C3"]


def regress_config(**regress: object) -> DimsConfig:
    spec = DimsModelConfig(image_size=SIZE, embedding_dim=16).model_dump(mode="json")
    return DimsConfig(
        model=spec,
        regress={"attention_dim": 16, "head_dim": 16, "mc_samples": 0, **regress},
        data={"companies": COMPANIES, "models": MODELS},
        embedders={"company": {"model": spec, "labels": COMPANIES}, "model": {"model": spec, "labels": MODELS}},
    )


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "image": torch.rand(4, 1, SIZE, SIZE, generator=generator),
        "length_mm": torch.tensor([8.0, 10.0, 11.5, 13.0]),
        "diameter_mm": torch.tensor([3.5, 4.1, 4.8, 5.0]),
        "company": torch.tensor([0, 1, 2, 2]),
        "model": torch.tensor([0, 2, 5, 3]),
    }


def regressor(source: str, attention: str = "dual") -> DimsRegressor:
    torch.manual_seed(0)
    return DimsRegressor.from_config(regress_config(embedding_source=source, attention_type=attention)).eval()


def force(model: DimsRegressor, company: int, model_index: int) -> None:
    """Make the company classifier always name class ``company`` and the model classifier ``model_index`` (a bias
    of 50 on that class; the class embedding table, the rows of the weight, stays as it was)."""
    with torch.no_grad():
        for embedder, index in ((model.company_embedder, company), (model.model_embedder, model_index)):
            embedder.classifier.bias.zero_()
            embedder.classifier.bias[index] = 50.0


def sizes(model: DimsRegressor, b: dict) -> torch.Tensor:
    pred = model.predict(b)
    return torch.stack([pred["length_mm"], pred["diameter_mm"]])


def test_oracle_embedding_is_the_true_class_row_and_zero_when_unknown():
    spec = DimsModelConfig(image_size=SIZE, embedding_dim=8)
    classifier = ImplantClassifier.from_config(spec, n_classes=3, target="company")
    out = classifier(batch()["image"])
    labels = torch.tensor([2, 0, -1, 1])
    oracle = class_embedding(classifier, out, "oracle", labels)
    table = classifier.class_embeddings()
    torch.testing.assert_close(oracle[[0, 1, 3]], table[[2, 0, 1]])
    assert torch.equal(oracle[2], torch.zeros(8))  # a name the vocabulary lacks: no identity, as with source none
    with pytest.raises(ValueError, match="true labels"):
        class_embedding(classifier, out, "oracle")


@pytest.mark.parametrize("attention", ["dual", "triple"])
def test_oracle_sizes_ignore_the_classifiers_prediction_and_follow_the_truth(attention: str):
    b = batch()
    oracle, hard = regressor("oracle", attention), regressor("hard", attention)
    answers = {}
    for name, model in (("oracle", oracle), ("hard", hard)):
        force(model, 0, 1)
        first = sizes(model, b)
        force(model, 2, 4)  # both classifiers now name other classes for every image
        second = sizes(model, b)
        assert model.predict(b)["model_probs"].argmax(dim=1).tolist() == [4] * 4  # they really changed their minds
        answers[name] = (first, second)
    torch.testing.assert_close(answers["oracle"][1], answers["oracle"][0], rtol=0, atol=0)
    assert (answers["hard"][1] - answers["hard"][0]).abs().max() > 1e-3
    # other true labels move the oracle's sizes; the classifiers' own sources never read them
    relabelled = {**b, "company": torch.tensor([1, 1, 1, 1]), "model": torch.tensor([2, 2, 2, 2])}
    assert (sizes(oracle, relabelled) - sizes(oracle, b)).abs().max() > 1e-3
    torch.testing.assert_close(sizes(hard, relabelled), sizes(hard, b), rtol=0, atol=0)


def test_oracle_trains_the_class_rows_of_the_true_labels_only():
    model = regressor("oracle").train()
    model.aux_classify_weight = 0.0  # the classifiers' own loss would reach every row
    model.loss(batch())["loss"].backward()
    for embedder, true in ((model.company_embedder, {0, 1, 2}), (model.model_embedder, {0, 2, 3, 5})):
        grad = embedder.classifier.weight.grad
        assert {int(i) for i in grad.abs().sum(dim=1).nonzero()} == true
    assert model.model_embedder.embed[0].weight.grad is None  # the classifier's features do not enter at all


def test_an_oracle_run_cannot_predict_images():
    task = DimsRegressionTask(regress_config(embedding_source="oracle").model_dump(mode="json"))
    with pytest.raises(FinescaleError, match="oracle"):
        DimsPredictor(task, device="cpu")
    DimsPredictor(DimsRegressionTask(regress_config().model_dump(mode="json")), device="cpu")  # the others can


def test_bench_oracle_rows_are_the_recipe_with_the_true_names():
    cfg = build_config(DimsConfig, preset="quick")
    variants = bench_variants(cfg)
    recipe = build_config(DimsConfig, overrides=variants["recipe"]).regress
    for attention in ("dual", "triple"):
        reg = build_config(DimsConfig, overrides=variants[f"oracle-{attention}"]).regress
        assert reg.embedding_source == "oracle" and reg.attention_type == attention
        same = {"embedding_source", "attention_type"}
        assert reg.model_dump(exclude=same) == recipe.model_dump(exclude=same)
    assert list(variants)[0] == "baseline" and list(variants)[-1] == "recipe"


def test_per_image_results_by_hand():
    records = [
        {"image": "a.png", "company": "A", "model": "A2", "length_mm": 10.0, "diameter_mm": 4.0},
        {"image": "b.png", "company": "C", "model": "C1", "length_mm": 12.0, "diameter_mm": 5.0},
        {"image": "c.png", "length_mm": 8.0, "diameter_mm": 3.5},  # no names: correctness unknown
        {"image": "d.png", "company": "Z", "model": "Z9", "length_mm": 9.0, "diameter_mm": 4.5},  # outside vocab
    ]
    model_probs = torch.zeros(4, 6)
    model_probs[torch.arange(4), torch.tensor([1, 0, 3, 3])] = 0.9  # A2 (right), A1 (wrong), C1, C1
    company_probs = torch.zeros(4, 3)
    company_probs[torch.arange(4), torch.tensor([0, 2, 1, 1])] = 0.7  # A (right), C (right), B, B
    arrays = {
        "length_mm": np.array([10.0, 11.0, 8.5, 9.0]),
        "raw_length_mm": np.array([10.2, 11.3, 8.4, 9.1]),
        "diameter_mm": np.array([4.0, 5.0, 3.5, 4.0]),
        "raw_diameter_mm": np.array([4.1, 4.8, 3.6, 4.1]),
        "true_length_mm": np.array([10.0, 12.0, 8.0, 9.0]),
        "true_diameter_mm": np.array([4.0, 5.0, 3.5, 4.5]),
        "company_probs": company_probs,
        "model_probs": model_probs,
        "true_company": torch.tensor([0, 2, -1, -1]),
        "true_model": torch.tensor([1, 3, -1, -1]),
    }
    rows = per_image_results(records, arrays, companies=COMPANIES, models=MODELS, unseen=[False, True, False, True])
    assert [r["model"] for r in rows] == ["A2", "A1", "C1", "C1"]
    assert [r["model_correct"] for r in rows] == [True, False, None, False]
    assert [r["company_classifier_correct"] for r in rows] == [True, True, None, False]
    assert rows[1]["length_error_mm"] == 1.0 and rows[1]["raw_length_mm"] == 11.3 and rows[1]["true_model"] == "C1"
    assert rows[3]["diameter_error_mm"] == 0.5 and rows[2]["true_model"] is None and rows[1]["unseen"] is True
    assert rows[0]["model_probability"] == 0.9
    # the share of True is the top-1 accuracy eval reports (a missing or unknown name counts as a miss there)
    metrics = regression_metrics(arrays)
    assert metrics["dims_model_accuracy"] == pytest.approx(sum(r["model_correct"] is True for r in rows) / 4)
    assert metrics["dims_company_accuracy"] == pytest.approx(
        sum(r["company_classifier_correct"] is True for r in rows) / 4
    )
    assert json.loads(json.dumps(rows)) == rows  # plain JSON

    classes = per_image_classes(records[:3], model_probs[:3], target="model", labels=MODELS)
    assert [(c["model"], c["true_model"], c["correct"]) for c in classes] == [
        ("A2", "A2", True),
        ("A1", "C1", False),
        ("C1", None, None),
    ]


TINY_YAML = """
trainer: {epochs: 1, batch_size: 8, accelerator: cpu, progress: false, limit_train_batches: 2}
model: {image_size: 48, embedding_dim: 16}
regress: {attention_dim: 16, head_dim: 16, mc_samples: 0}
"""


@pytest.mark.slow
def test_tiny_oracle_bench_trains_and_writes_per_image_results(implants: Path, tmp_path: Path):
    from finescale.eval.bench import run_bench
    from finescale.pipelines import get_pipeline

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    out = tmp_path / "bench"
    pipeline = get_pipeline("dims")
    result = run_bench(pipeline, out, seeds=(0,), variants=["oracle-dual"], data_dir=implants, config_file=config)
    (row,) = result["rows"]
    assert row["variant"] == "oracle-dual" and row["dims_avg_mae_mm_mean"] is not None
    run = out / "runs" / "oracle-dual" / "seed0"
    assert yaml.safe_load((run / "config.yaml").read_text())["regress"]["embedding_source"] == "oracle"
    metrics = json.loads((run / "test_metrics.json").read_text())
    for key in pipeline.bench_metrics:
        assert metrics[key] is not None, key
    # eval wrote one row per test image; the classifiers' top-1 in the metrics is the share of right rows
    test = json.loads((implants / "test.json").read_text())
    rows = json.loads((run / "predictions_test.json").read_text())
    assert [Path(r["image"]).name for r in rows] == [Path(r["image"]).name for r in test]
    assert all(isinstance(r["model_correct"], bool) and r["true_model"] for r in rows)
    for row_key, metric in (
        ("model_correct", "dims_model_accuracy"),
        ("company_classifier_correct", "dims_company_accuracy"),
    ):
        assert metrics[metric] == pytest.approx(np.mean([r[row_key] for r in rows]), abs=1e-9), metric
    errors = [(r["length_error_mm"] + r["diameter_error_mm"]) / 2 for r in rows]
    assert metrics["dims_avg_mae_mm"] == pytest.approx(np.mean(errors), abs=2e-3)  # rows are rounded to 1 µm
