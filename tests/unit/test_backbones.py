import pytest
import torch

from finescale.nn.backbones import ImageNormalize, TimmEncoder
from finescale.nn.fpn import FeaturePyramid


def test_image_normalize_by_hand_and_grey_as_rgb():
    norm = ImageNormalize({"mean": (0.1, 0.2, 0.3), "std": (0.5, 0.25, 0.125)})
    rgb = torch.rand(2, 3, 5, 7)
    expected = torch.stack([(rgb[:, 0] - 0.1) / 0.5, (rgb[:, 1] - 0.2) / 0.25, (rgb[:, 2] - 0.3) / 0.125], dim=1)
    torch.testing.assert_close(norm(rgb), expected)
    grey = torch.rand(2, 1, 5, 7)
    torch.testing.assert_close(norm(grey), norm(grey.repeat(1, 3, 1, 1)))
    imagenet = ImageNormalize(None)  # a model without a config: ImageNet's mean/std
    assert imagenet.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert imagenet.std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])
    assert norm.state_dict() == {}  # non-persistent: never in a checkpoint


def test_timm_encoder_normalises_with_its_models_mean_std_and_keeps_its_state_dict_keys():
    encoder = TimmEncoder(name="test_resnet").eval()  # test_resnet's config: mean = std = 0.5, not ImageNet's
    grey = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(encoder(grey), encoder.net((grey.expand(-1, 3, -1, -1) - 0.5) / 0.5))
    # checkpoints saved before the shared ImageNormalize load unchanged: only the network's own tensors are saved
    assert set(encoder.state_dict()) == {f"net.{k}" for k in encoder.net.state_dict()}


def test_feature_pyramid_normalises_with_its_models_mean_std_and_keeps_its_state_dict_keys():
    fpn = FeaturePyramid(name="test_resnet", out_channels=8).eval()
    grey = torch.rand(1, 1, 64, 64)
    stages = fpn.body((grey.expand(-1, 3, -1, -1) - 0.5) / 0.5)
    levels = {f"p{i + 3}": stages[j] for i, j in enumerate(fpn.stage_indices)}
    for ours, by_hand in zip(fpn(grey), fpn.fpn(levels).values(), strict=True):
        torch.testing.assert_close(ours, by_hand)
    expected = {f"body.{k}" for k in fpn.body.state_dict()} | {f"fpn.{k}" for k in fpn.fpn.state_dict()}
    assert set(fpn.state_dict()) == expected
