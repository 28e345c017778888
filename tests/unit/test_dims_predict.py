"""dims predict answers are deterministic and self-consistent: the sizes come from the model in eval mode (what
``eval`` scores), the same for an image whatever else is in its batch and on every call; the MC-dropout spread stands
beside them; the company reported is the predicted model's maker, the company classifier's own pick shown and
flagged when it disagrees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finescale.pipelines.dims.catalogue import maker_of, read_catalogue
from finescale.pipelines.dims.config import DimsConfig, DimsModelConfig
from finescale.pipelines.dims.predict import DimsPredictor
from finescale.pipelines.dims.task import DimsRegressionTask
from finescale.synth.implants import CATALOGUE, generate_implants

SIZE = 64
COMPANIES = sorted({m.company for m in CATALOGUE})
MODELS = sorted(m.name for m in CATALOGUE)


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[dict]]:
    out = tmp_path_factory.mktemp("dims_predict")
    generate_implants(out, n=12, seed=3, size=96, workers=1)
    records = [r for split in ("train", "val", "test") for r in json.loads((out / f"{split}.json").read_text())]
    return [out / r["image"] for r in records[:5]], records


def task_disagreeing(records: list[dict], *, company: str, model: str) -> DimsRegressionTask:
    """A regressor whose company classifier always names ``company`` and model classifier always ``model``."""
    spec = DimsModelConfig(image_size=SIZE, embedding_dim=16, dropout=0.3).model_dump(mode="json")
    cfg = DimsConfig(
        model=spec,
        regress={"attention_dim": 16, "head_dim": 16, "mc_samples": 8},
        data={"companies": COMPANIES, "models": MODELS},
        embedders={"company": {"model": spec, "labels": COMPANIES}, "model": {"model": spec, "labels": MODELS}},
        catalogue=read_catalogue(records),
    )
    torch.manual_seed(0)
    task = DimsRegressionTask(cfg.model_dump(mode="json"))
    with torch.no_grad():
        for embedder, labels, name in (
            (task.model.company_embedder, COMPANIES, company),
            (task.model.model_embedder, MODELS, model),
        ):
            embedder.classifier.bias.zero_()
            embedder.classifier.bias[labels.index(name)] = 50.0
    return task.eval()


def test_answers_are_deterministic_and_from_the_model_in_eval_mode(radiographs):
    images, records = radiographs
    task = task_disagreeing(records, company="Medisolid", model="Kalyx Straight KS")
    predictor = DimsPredictor(task, batch_size=8, device="cpu")
    first = predictor.predict(images)
    assert predictor.predict(images) == first  # the same call, the same answers
    # one image alone, or in another batch, gets the same answer as in the first batch
    alone = predictor.predict(images[2])[0]
    mixed = DimsPredictor(task, batch_size=2, device="cpu").predict([images[4], images[2]])[1]
    for other in (alone, mixed):
        for key in ("raw_length_mm", "raw_diameter_mm", "length_mm", "diameter_mm", "company", "model"):
            assert other[key] == pytest.approx(first[2][key], abs=1e-3), key
        for key, value in first[2]["uncertainty"].items():
            assert other["uncertainty"][key] == pytest.approx(value, abs=1e-3), key
    # the sizes are those of the model with dropout off, as `eval` scores them; MC dropout only spreads around them
    plain = DimsPredictor(task, mc_samples=0, batch_size=8, device="cpu").predict(images)
    for answer, once in zip(first, plain, strict=True):
        assert answer["raw_length_mm"] == once["raw_length_mm"] and answer["length_mm"] == once["length_mm"]
        spread = answer["uncertainty"]
        assert spread["mc_samples"] == 8 and spread["length_mm_std"] > 0 and spread["diameter_mm_std"] > 0
        assert spread["length_mm_mean"] is not None and once["uncertainty"]["length_mm_std"] is None


def test_company_is_the_predicted_models_maker(radiographs):
    images, records = radiographs
    task = task_disagreeing(records, company="Medisolid", model="Kalyx Straight KS")
    for answer in DimsPredictor(task, batch_size=8, device="cpu").predict(images):
        assert answer["model"] == "Kalyx Straight KS" and answer["company"] == "Kalyx"
        assert answer["company_classifier"] == "Medisolid" and answer["company_classifier_agrees"] is False
        assert answer["company_probability"] == answer["company_probabilities"]["Kalyx"]
    agreeing = task_disagreeing(records, company="Kalyx", model="Kalyx Straight KS")
    answer = DimsPredictor(agreeing, mc_samples=0, device="cpu").predict(images[0])[0]
    assert answer["company"] == answer["company_classifier"] == "Kalyx" and answer["company_classifier_agrees"]


def test_maker_from_the_training_manifest_else_the_name():
    catalogue = read_catalogue(
        [
            {"model": "Alpha One", "company": "Acme", "length_mm": 10.0, "diameter_mm": 4.0},
            {"model": "Alpha One", "company": "Acme", "length_mm": 11.0, "diameter_mm": 4.0},
            {"model": "Alpha One", "company": "Other", "length_mm": 12.0, "diameter_mm": 4.0},
            {"model": "Beta Max", "length_mm": 10.0, "diameter_mm": 4.0},
        ]
    )
    assert catalogue["Alpha One"]["company"] == "Acme" and "company" not in catalogue["Beta Max"]
    companies = ["Acme", "Beta", "Other"]
    assert maker_of("Alpha One", catalogue, companies) == "Acme"  # the manifest's, though the name says nothing
    assert maker_of("Beta Max", catalogue, companies) == "Beta"  # the name's first word(s)
    assert maker_of("Gamma", catalogue, companies) is None
