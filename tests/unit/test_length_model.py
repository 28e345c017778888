from pathlib import Path

import pytest
import torch

from finescale.errors import FinescaleError
from finescale.losses import gaussian_smooth_labels
from finescale.nn.backbones import TimmEncoder, load_weights
from finescale.pipelines.length.config import LengthModelConfig
from finescale.pipelines.length.model import MultiScaleLengthModel, bin_centers


def batch(cfg: LengthModelConfig, size: int = 3) -> dict:
    torch.manual_seed(0)
    out = {"scales": [torch.rand(size, 1, s, s) for s in cfg.scales], "length_mm": torch.tensor([6.0, 10.2, 16.0])}
    if cfg.use_crops:
        out["crops"] = torch.rand(size, 3 if cfg.whole_crop else 2, 1, cfg.crop_size, cfg.crop_size)
    if cfg.use_geometry:
        out["geometry"] = torch.rand(size, 4)
    if cfg.use_profile:
        out["profile"] = torch.rand(size, 5, cfg.profile_samples)
    return out


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"scales": [32]},
        {"scales": [32, 48, 64], "share_backbone": False},
        {"use_crops": False},
        {"whole_crop": False, "use_geometry": False, "use_profile": False},
        {"fusion": "attention"},
        {"aux_regression_weight": 0.0},
    ],
)
def test_outputs_and_losses_at_each_setting(changes: dict):
    cfg = LengthModelConfig(**{"scales": [32, 48], "crop_size": 32, "fusion_dim": 16, **changes})
    model = MultiScaleLengthModel.from_config(cfg)
    b = batch(cfg)
    out = model(b)
    assert out["logits"].shape == (3, 21)
    assert ("regression" in out) == (cfg.aux_regression_weight > 0)
    losses = model.loss(b)
    assert set(losses) == {"loss", "cls"} | ({"reg_aux"} if cfg.aux_regression_weight > 0 else set())
    losses["loss"].backward()
    pred = model.predict(b)
    assert pred["probs"].shape == (3, 21)
    torch.testing.assert_close(pred["probs"].sum(1), torch.ones(3))
    assert torch.all((pred["fine_mm"] > 0) & (pred["bin_mm"] >= 6.0) & (pred["bin_mm"] <= 16.0))


def test_separate_backbones_per_scale_when_not_shared():
    cfg = LengthModelConfig(scales=[32, 48], crop_size=32, fusion_dim=16, share_backbone=False)
    model = MultiScaleLengthModel.from_config(cfg)
    assert model.scale_encoders[0] is not model.scale_encoders[1]
    assert model.crop_encoder is not model.scale_encoders[0]


def test_bins_follow_the_config():
    centers = bin_centers(LengthModelConfig(bin_min=6.0, bin_max=16.0, bin_width=0.5))
    assert centers.numel() == 21 and centers[1] == pytest.approx(6.5) and centers[-1] == pytest.approx(16.0)


def test_classification_loss_is_cross_entropy_against_gaussian_smooth_labels():
    cfg = LengthModelConfig(scales=[32], use_crops=False, fusion_dim=16, aux_regression_weight=0.0, smooth_sigma=0.5)
    model = MultiScaleLengthModel.from_config(cfg).eval()  # eval: no dropout, so both forward passes agree
    b = batch(cfg)
    smooth = gaussian_smooth_labels(b["length_mm"], model.centers, 0.5)
    by_hand = -(smooth * model(b)["logits"].log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(model.loss(b)["cls"], by_hand)


def test_fine_length_from_the_expectation_without_regression_head():
    cfg = LengthModelConfig(scales=[32], use_crops=False, fusion_dim=16, aux_regression_weight=0.0)
    model = MultiScaleLengthModel.from_config(cfg)
    pred = model.predict(batch(cfg))
    torch.testing.assert_close(pred["fine_mm"], pred["probs"] @ model.centers)


def test_vit_backbone_serves_two_resolutions():
    encoder = TimmEncoder(name="test_vit")
    assert encoder(torch.rand(2, 1, 64, 64)).shape == encoder(torch.rand(2, 3, 96, 96)).shape


def test_backbone_weights_load_from_a_file(tmp_path: Path):
    source = TimmEncoder(name="test_resnet")
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in source.net.state_dict().items()}}, path)
    target = TimmEncoder(name="test_resnet", weights=path)
    for key, value in source.net.state_dict().items():
        torch.testing.assert_close(target.net.state_dict()[key], value)


def test_weights_file_that_matches_nothing_is_an_error(tmp_path: Path):
    path = tmp_path / "other.pth"
    torch.save({"foo": torch.zeros(3)}, path)
    with pytest.raises(FinescaleError, match="matches"):
        TimmEncoder(name="test_resnet", weights=path)
    with pytest.raises(FinescaleError, match="does not exist"):
        load_weights(torch.nn.Linear(2, 2), tmp_path / "missing.pth")
