"""Per-label calibration (temperature, Platt), ensembles of members and TTA aggregation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from finescale.eval.calibration import (
    apply_calibration,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
    fit_temperature,
    reliability_curve,
)
from finescale.eval.ensemble import combine, mutual_information, predictive_entropy, tta_aggregate
from finescale.eval.multilabel import binary_auroc

N, L = 20_000, 4


def _miscalibrated(scale: torch.Tensor, shift: torch.Tensor | float = 0.0, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Logits z (N, L) and labels drawn from sigmoid(scale * z + shift): the true calibration map is known."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, L, generator=g) * 4
    labels = torch.bernoulli(torch.sigmoid(scale * z + shift), generator=g)
    return z, labels


def _bce(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.binary_cross_entropy_with_logits(logits, labels))


def test_temperature_recovers_three_and_improves_bce() -> None:
    z, labels = _miscalibrated(torch.full((L,), 1 / 3))
    temperature = fit_temperature(z, labels)
    assert temperature.shape == (L,) and temperature.dtype == torch.float32
    np.testing.assert_allclose(temperature.numpy(), 3.0, rtol=0.08)
    calibrated = apply_calibration(z, temperature, "temperature")
    assert float(F.binary_cross_entropy(calibrated, labels)) < _bce(z, labels) - 0.1
    assert expected_calibration_error(calibrated, labels) < 0.02 < expected_calibration_error(torch.sigmoid(z), labels)


def test_temperature_per_label_and_degenerate_labels() -> None:
    z, labels = _miscalibrated(torch.tensor([1.0, 0.5, 1 / 3, 1.0]))
    labels[:, 3] = 1.0  # a single class: no information about the scale
    temperature = fit_temperature(z, labels)
    np.testing.assert_allclose(temperature[:3].numpy(), [1.0, 2.0, 3.0], rtol=0.08)
    assert temperature[3] == 1.0
    separable = (z > 0).float()  # a perfect model: the plain BCE optimum would be T -> 0
    t_sep = fit_temperature(z, separable)
    assert (t_sep >= 0.05).all()
    probs = apply_calibration(z, t_sep, "temperature")
    assert np.allclose(binary_auroc(probs.numpy(), separable.numpy()), 1.0)  # no saturation ties


def test_platt_recovers_known_a_b() -> None:
    a, b = torch.tensor([0.5, 1.5, 1.0, 0.25]), torch.tensor([-1.0, 0.5, 2.0, 0.0])
    z, labels = _miscalibrated(a, b)
    params = fit_platt(z, labels)
    assert params.shape == (L, 2)
    np.testing.assert_allclose(params[:, 0].numpy(), a.numpy(), rtol=0.1)
    np.testing.assert_allclose(params[:, 1].numpy(), b.numpy(), atol=0.1)
    assert float(F.binary_cross_entropy(apply_calibration(z, params, "platt"), labels)) < _bce(z, labels)


def test_params_live_in_a_weights_only_checkpoint() -> None:
    z, labels = _miscalibrated(torch.full((L,), 0.5))
    state = {
        "calibration": {"kind": "platt", "params": fit_calibration(z, labels, "platt")},
        "temperature": fit_calibration(z, labels, "temperature"),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    calibration = loaded["calibration"]
    expected = apply_calibration(z, state["calibration"]["params"], "platt")
    torch.testing.assert_close(apply_calibration(z, calibration["params"], calibration["kind"]), expected)
    as_list = calibration["params"].tolist()  # e.g. read back from JSON
    torch.testing.assert_close(apply_calibration(z, as_list, "platt"), expected)
    torch.testing.assert_close(apply_calibration(z, None, "none"), torch.sigmoid(z))
    with pytest.raises(ValueError, match="unknown calibration"):
        fit_calibration(z, labels, "isotonic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs its fitted parameters"):
        apply_calibration(z, None, "temperature")


def test_reliability_curve_on_a_hand_example() -> None:
    probs = np.array([0.05, 0.15, 0.12, 0.95, 1.0])
    labels = np.array([0, 1, 0, 1, 1])
    mean_prob, frac_pos, counts = reliability_curve(probs, labels, bins=10)
    assert counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    np.testing.assert_allclose(mean_prob[[0, 1, 9]], [0.05, 0.135, 0.975])
    np.testing.assert_allclose(frac_pos[[0, 1, 9]], [0.0, 0.5, 1.0])
    assert np.isnan(mean_prob[2])
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx((0.05 + 2 * 0.365 + 2 * 0.025) / 5)


def _members(seed: int = 0, m: int = 3) -> torch.Tensor:
    return torch.rand(m, 6, 5, generator=torch.Generator().manual_seed(seed))


def test_mean_of_identical_members_is_the_member() -> None:
    member = _members(m=1)[0]
    for kind in ("mean", "adaptive"):
        probs, spread = combine(member.expand(4, -1, -1), kind)
        torch.testing.assert_close(probs, member)
        torch.testing.assert_close(spread, torch.zeros_like(member), atol=1e-6, rtol=0)
    probs, spread = combine(_members(), "mean")
    torch.testing.assert_close(probs, _members().mean(0))
    torch.testing.assert_close(spread, _members().std(0, correction=0))


def test_adaptive_leans_to_the_confident_member() -> None:
    confident, unsure = torch.full((1, 2, 3), 0.95), torch.full((1, 2, 3), 0.4)
    probs, spread = combine(torch.cat([confident, unsure]), "adaptive")
    assert ((probs > 0.5 * (0.95 + 0.4)) & (probs < 0.95)).all()  # above the plain mean, towards 0.95
    torch.testing.assert_close(probs, torch.full((2, 3), (0.9 * 0.95 + 0.2 * 0.4 + 1e-3 * 1.35) / (1.1 + 2e-3)))
    assert (spread > 0).all()
    # By validation AUROC instead: member 0 is at chance on label 0, member 1 on label 1.
    members = torch.stack([torch.full((2, 2), 0.9), torch.full((2, 2), 0.1)])
    auroc = torch.tensor([[0.5, 0.9], [0.9, 0.5]])
    probs, _ = combine(members, "adaptive", member_auroc=auroc)
    assert probs[:, 0].allclose(torch.tensor(0.1), atol=0.01) and probs[:, 1].allclose(torch.tensor(0.9), atol=0.01)


def test_bayesian_pools_mc_samples_like_numpy() -> None:
    samples = np.array(  # (M=2 members, S=3 MC passes, N=1, L=2)
        [[[[0.9, 0.2]], [[0.7, 0.1]], [[0.8, 0.3]]], [[[0.4, 0.2]], [[0.6, 0.2]], [[0.5, 0.2]]]], dtype=np.float32
    )
    probs, spread = combine(samples, "bayesian")
    pooled = samples.reshape(6, 1, 2)
    np.testing.assert_allclose(probs.numpy(), pooled.mean(0), rtol=1e-6)
    np.testing.assert_allclose(spread.numpy(), pooled.std(0), rtol=1e-5)
    np.testing.assert_allclose(probs.numpy()[0], [0.65, 0.2], rtol=1e-6)
    # The same from members' MC means and stds (law of total variance).
    probs2, spread2 = combine(samples.mean(1), "bayesian", stds=samples.std(1))
    torch.testing.assert_close(probs2, probs)
    torch.testing.assert_close(spread2, spread)
    epistemic = mutual_information(torch.from_numpy(pooled))
    assert (epistemic >= 0).all() and (epistemic <= predictive_entropy(probs)).all()
    with pytest.raises(ValueError, match="bayesian needs"):
        combine(samples.mean(1), "bayesian")
    with pytest.raises(ValueError, match="unknown ensemble"):
        combine(samples.mean(1), "median")  # type: ignore[arg-type]


def test_tta_aggregation() -> None:
    views = torch.tensor([[[0.5, 0.9]], [[0.9, 0.999]], [[0.1, 0.5]]])  # (T=3, N=1, L=2)
    torch.testing.assert_close(tta_aggregate(views, "mean"), views.mean(0))
    expected = torch.sigmoid(torch.logit(views).mean(0))
    torch.testing.assert_close(tta_aggregate(views, "logit_mean"), expected)
    assert tta_aggregate(views, "logit_mean")[0, 0] == pytest.approx(0.5, abs=1e-6)  # odds 1/9 and 9 cancel
    torch.testing.assert_close(tta_aggregate(views[:1], "logit_mean"), views[0], rtol=0, atol=1e-6)


def test_mc_dropout_on_a_model_without_dropout_is_an_error():
    from finescale.errors import FinescaleError
    from finescale.eval.uncertainty import mc_dropout

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.0)).eval()  # p = 0: every sample equal
    with pytest.raises(FinescaleError, match="dropout layer with p > 0"):
        mc_dropout(model, lambda: {"y": model(torch.zeros(1, 3))}, 4)
    model[1].p = 0.5
    assert mc_dropout(model, lambda: {"y": model(torch.ones(1, 3))}, 4)["y"].shape == (4, 1, 2)


def test_f1_threshold_hand_case_puts_the_best_cut_at_one_half():
    from sklearn.metrics import f1_score

    from finescale.eval.calibration import fit_f1_threshold

    # label 0: calling the top 1, 2, 3, 4, 5 positive gives F1 2/3, 1/2, 4/5, 2/3, 4/7: the best cut is between 1 and 0
    # label 1: tied logits are never split (top 2 = both 1s: F1 2/3; all three: 1/2): the cut lies between 1 and 0
    # label 2: a single class says nothing about a threshold: 0, the model's own
    z = torch.tensor([[3.0, 1.0, 0.2], [2.0, 1.0, 0.1], [1.0, 0.0, 0.0], [0.0, -1.0, -0.4], [-1.0, -2.0, 0.3]])
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    t = fit_f1_threshold(z, y)
    torch.testing.assert_close(t, torch.tensor([0.5, 0.5, 0.0]))
    probs = apply_calibration(z, t, "threshold")
    assert f1_score(y[:, 0], probs[:, 0] >= 0.5) == pytest.approx(0.8)
    np.testing.assert_allclose(
        binary_auroc(probs[:, :2].numpy(), y[:, :2].numpy()), binary_auroc(z[:, :2].numpy(), y[:, :2].numpy())
    )


def test_platt_keeps_each_labels_ranking_even_where_validation_ranks_it_backwards():
    z, labels = _miscalibrated(torch.full((L,), 1.0))
    params = fit_platt(-z, labels)  # a model that ranks every label backwards on this split
    assert (params[:, 0] > 0).all()  # unconstrained, the BCE-best slope would be about -1 and flip the ranking
    probs = apply_calibration(-z, params, "platt")
    np.testing.assert_allclose(
        binary_auroc(probs.numpy(), labels.numpy()), binary_auroc((-z).numpy(), labels.numpy()), atol=1e-6
    )
