"""dims models: classifier and regressor shapes, embedding sources, MC dropout, learning-rate groups."""

from __future__ import annotations

import pytest
import torch

from finescale.eval.uncertainty import mc_dropout
from finescale.pipelines.dims.config import DimsConfig, DimsModelConfig
from finescale.pipelines.dims.model import DimsRegressor, ImplantClassifier, class_embedding
from finescale.pipelines.dims.task import DimsRegressionTask, dims_task

SIZE = 64
COMPANIES = ["A", "B", "C"]
MODELS = ["A1", "A2", "B1", "C1", "C2", "C3"]


def model_cfg(embedding_dim: int = 16) -> DimsModelConfig:
    return DimsModelConfig(image_size=SIZE, embedding_dim=embedding_dim)


def regress_config(**regress: object) -> dict:
    embedders = {
        "company": {"model": model_cfg(16).model_dump(mode="json"), "labels": COMPANIES},
        "model": {"model": model_cfg(8).model_dump(mode="json"), "labels": MODELS},
    }
    cfg = DimsConfig(
        model=model_cfg(),
        regress={"attention_dim": 16, "head_dim": 16, **regress},
        data={"companies": COMPANIES, "models": MODELS},
        embedders=embedders,
    )
    return cfg.model_dump(mode="json")


def batch(size: int = 4) -> dict:
    torch.manual_seed(0)
    return {
        "image": torch.rand(size, 1, SIZE, SIZE),
        "length_mm": torch.tensor([8.0, 10.0, 11.5, 13.0])[:size],
        "diameter_mm": torch.tensor([3.5, 4.1, 4.8, 5.0])[:size],
        "company": torch.tensor([0, 1, 2, -1])[:size],
        "model": torch.tensor([0, 2, 5, 1])[:size],
    }


@pytest.mark.parametrize("embedding_dim", [16, 128])
def test_classifier_shapes_and_loss(embedding_dim: int):
    model = ImplantClassifier.from_config(model_cfg(embedding_dim), n_classes=3, target="company")
    b = batch()
    out = model(b["image"])
    assert out["embedding"].shape == (4, embedding_dim) and out["logits"].shape == (4, 3)
    assert model.class_embeddings().shape == (3, embedding_dim)
    losses = model.loss(b)  # one label is unknown (-1): ignored, not an error
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    pred = model.predict(b)
    torch.testing.assert_close(pred["probs"].sum(1), torch.ones(4))


def test_classifier_loss_with_no_known_label_is_zero():
    model = ImplantClassifier.from_config(model_cfg(), n_classes=3, target="company")
    b = {**batch(2), "company": torch.tensor([-1, -1])}
    assert model.loss(b)["loss"].item() == 0.0


@pytest.mark.parametrize(("attention", "n_weights"), [("dual", 2), ("triple", 3), ("hierarchical", 3)])
def test_regressor_outputs_and_losses(attention: str, n_weights: int):
    task = DimsRegressionTask(regress_config(attention_type=attention))
    model = task.model
    b = batch()
    out = model(b)
    assert out["regression"].shape == (4, 2) and out["weights"].shape == (4, n_weights)
    assert out["company_logits"].shape == (4, 3) and out["model_logits"].shape == (4, 6)
    losses = model.loss(b)
    assert set(losses) == {"loss", "reg_length", "reg_diameter", "cls_company", "cls_model"}
    losses["loss"].backward()
    assert model.head[-1].weight.grad is not None and model.company_embedder.classifier.weight.grad is not None
    pred = model.predict(b)
    assert pred["length_mm"].shape == (4,) and pred["diameter_mm"].shape == (4,)
    torch.testing.assert_close(pred["model_probs"].sum(1), torch.ones(4))


def test_soft_embedding_mixes_class_vectors_hard_picks_one():
    classifier = ImplantClassifier.from_config(model_cfg(), n_classes=3, target="company")
    out = classifier(batch()["image"])
    table = classifier.class_embeddings()
    probs = out["logits"].softmax(dim=1)
    soft = class_embedding(classifier, out, "soft")
    hard = class_embedding(classifier, out, "hard")
    torch.testing.assert_close(soft, probs @ table)
    torch.testing.assert_close(hard, table[probs.argmax(dim=1)])
    assert all(any(torch.equal(row, t) for t in table) for row in hard)  # each row is exactly one class's vector
    torch.testing.assert_close(class_embedding(classifier, out, "features"), out["embedding"])
    # soft passes gradients to the classifier's backbone; hard only to the class table
    soft.sum().backward()
    assert classifier.embed[0].weight.grad is not None
    classifier.zero_grad(set_to_none=True)
    out = classifier(batch()["image"])
    class_embedding(classifier, out, "hard").sum().backward()
    assert classifier.embed[0].weight.grad is None and classifier.classifier.weight.grad is not None


@pytest.mark.parametrize("source", ["soft", "hard", "features", "none"])
def test_regressor_runs_with_each_embedding_source(source: str):
    """With ``none`` the regressor sees the image only: changing the classifiers leaves its sizes as they were;
    every other source feeds them in, so the sizes move."""
    torch.manual_seed(0)
    model = DimsRegressor.from_config(DimsConfig.model_validate(regress_config(embedding_source=source))).eval()
    b = batch()
    before = model.predict(b)
    assert before["length_mm"].shape == (4,)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for embedder in (model.company_embedder, model.model_embedder):
            for p in embedder.parameters():
                p.add_(torch.randn(p.shape, generator=generator))
    after = model.predict(b)
    assert not torch.equal(after["model_probs"], before["model_probs"])  # the classifiers did change
    sizes = torch.stack([before["length_mm"], before["diameter_mm"]])
    changed = torch.stack([after["length_mm"], after["diameter_mm"]])
    if source == "none":
        torch.testing.assert_close(changed, sizes, rtol=0, atol=0)
    else:
        assert (changed - sizes).abs().max() > 1e-3


def test_embedders_load_from_classifier_state_dicts():
    cfg = DimsConfig.model_validate(regress_config())
    company = ImplantClassifier.from_config(model_cfg(16), n_classes=3, target="company")
    model = ImplantClassifier.from_config(model_cfg(8), n_classes=6, target="model")
    regressor = DimsRegressor.from_config(cfg)
    regressor.load_embedders(company.state_dict(), model.state_dict())
    torch.testing.assert_close(regressor.company_embedder.classifier.weight, company.classifier.weight)


def test_embedding_models_train_at_a_tenth_of_the_learning_rate():
    task = DimsRegressionTask(regress_config(embedding_lr_mult=0.1))
    groups = task.param_groups()
    assert [g.name for g in groups] == ["embedders", "head"] and groups[0].lr_mult == 0.1
    from finescale.engine.optim import build_param_groups

    built = build_param_groups(groups, lr=1.0, weight_decay=0.0)
    n_embedders = sum(1 for _ in groups[0].module.parameters())
    assert sum(len(g["params"]) for g in built if g["name"].startswith("embedders")) == n_embedders
    assert {g["lr"] for g in built if g["name"].startswith("embedders")} == {0.1}
    assert sum(len(g["params"]) for g in built) == sum(1 for _ in task.model.parameters())


def test_mc_dropout_spreads_only_with_dropout_active():
    model = DimsRegressor.from_config(DimsConfig.model_validate(regress_config())).eval()
    b = batch()
    runs = mc_dropout(model, lambda: model.predict(b), 6)
    assert runs["length_mm"].shape == (6, 4)
    assert runs["length_mm"].std(dim=0).max() > 0
    assert not any(m.training for m in model.modules())  # modes restored
    torch.testing.assert_close(model.predict(b)["length_mm"], model.predict(b)["length_mm"])


def test_task_factory_picks_the_stage():
    cfg = DimsConfig(stage="classify", model=model_cfg(), data={"companies": COMPANIES}).model_dump(mode="json")
    assert type(dims_task(cfg)).__name__ == "DimsClassifierTask"
    assert type(dims_task(regress_config())).__name__ == "DimsRegressionTask"
