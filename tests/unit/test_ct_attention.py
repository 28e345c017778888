"""The ct pipeline's neural blocks: 2-D attention, slice pooling, heads and the 3-D baseline."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from finescale.errors import FinescaleError
from finescale.nn.attention2d import (
    ATTENTIONS_2D,
    CBAM,
    ChannelAffinity,
    DualAttention,
    MedicalAttention,
    PositionAttention,
    QuadrantGate,
)
from finescale.nn.heads import EnhancedClassifier, EnhancedHead, PlainHead
from finescale.nn.slice_pooling import SLICE_POOLS, MaxSlicePool, MeanSlicePool, SliceAttentionPool
from finescale.nn.volume3d import Volume3DClassifier


@pytest.mark.parametrize("name", ["none", "cbam", "medical", "dual"])
@pytest.mark.parametrize("size", [(7, 7), (5, 9)])
def test_every_attention_keeps_the_map_shape(name, size):
    torch.manual_seed(0)
    x = torch.randn(2, 32, *size)
    assert ATTENTIONS_2D[name](32)(x).shape == x.shape


@pytest.mark.parametrize("module", [DualAttention(16), MedicalAttention(16, n_labels=5)], ids=["dual", "medical"])
def test_residual_attentions_are_exactly_the_identity_at_init(module):
    torch.manual_seed(0)
    x = torch.randn(3, 16, 6, 6)
    for mode in (True, False):
        module.train(mode)
        assert torch.equal(module(x), x)


def test_cbam_channel_gate_equals_the_hand_computation():
    # C = 4, r = 2: MLP 4 -> 2 -> 4 with fixed weights, on avg- and max-pooled descriptors, summed, sigmoid
    cbam = CBAM(4, reduction=2)
    w0 = [[0.5, -0.25, 0.0, 1.0], [-1.0, 0.5, 0.25, 0.0]]
    b0, w1, b1 = [0.1, -0.2], [[1.0, 0.0], [0.0, 1.0], [0.5, -0.5], [-1.0, 2.0]], [0.0, 0.1, -0.1, 0.2]
    first, second = cbam.channel.mlp[0], cbam.channel.mlp[2]
    with torch.no_grad():
        first.weight.copy_(torch.tensor(w0)), first.bias.copy_(torch.tensor(b0))
        second.weight.copy_(torch.tensor(w1)), second.bias.copy_(torch.tensor(b1))
    x = torch.tensor(
        [[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [1.0, 0.0]], [[0.5, 0.5], [0.5, 2.5]], [[2.0, -2.0], [0.0, 0.0]]]
    )

    def mlp(v):
        hidden = [max(sum(w * u for w, u in zip(row, v, strict=True)) + b, 0.0) for row, b in zip(w0, b0, strict=True)]
        return [sum(w * h for w, h in zip(row, hidden, strict=True)) + b for row, b in zip(w1, b1, strict=True)]

    avg = [float(c.mean()) for c in x]  # [2.5, 0.0, 1.0, 0.0]
    peak = [float(c.max()) for c in x]  # [4.0, 1.0, 2.5, 2.0]
    expected = torch.sigmoid(torch.tensor(mlp(avg)) + torch.tensor(mlp(peak)))
    torch.testing.assert_close(cbam.channel(x[None]).flatten(), expected)


def test_cbam_spatial_gate_is_a_conv_over_channel_mean_and_max():
    cbam = CBAM(4, reduction=2)
    with torch.no_grad():  # only the centre taps: gate = sigmoid(a * mean_c + b * max_c + c) per pixel
        cbam.spatial.conv.weight.zero_()
        cbam.spatial.conv.weight[0, :, 3, 3] = torch.tensor([0.5, -1.0])
        cbam.spatial.conv.bias.fill_(0.25)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    expected = torch.sigmoid(0.5 * x.mean(1, keepdim=True) - 1.0 * x.amax(1, keepdim=True) + 0.25)
    torch.testing.assert_close(cbam.spatial(x), expected)
    torch.testing.assert_close(cbam(x), x * cbam.channel(x) * cbam.spatial(x * cbam.channel(x)))


def test_danet_modules_match_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 3, 4)
    pam = PositionAttention(16, reduction=8)
    q, k, v = (conv(x).flatten(2) for conv in (pam.query, pam.key, pam.value))  # (B, C', N), (B, C', N), (B, C, N)
    weights = torch.einsum("bci,bcj->bij", q, k).softmax(dim=-1)  # position i attends to positions j
    torch.testing.assert_close(pam(x), torch.einsum("bij,bcj->bci", weights, v).view_as(x))
    flat = x.flatten(2)
    energy = torch.einsum("bcn,bdn->bcd", flat, flat)
    affinity = (energy.amax(-1, keepdim=True) - energy).softmax(-1)  # DANet's code: softmax(rowmax - E)
    torch.testing.assert_close(ChannelAffinity()(x), torch.einsum("bcd,bdn->bcn", affinity, flat).view_as(x))
    dual = DualAttention(16)
    with torch.no_grad():
        dual.gamma_position.fill_(0.3), dual.gamma_channel.fill_(-0.7)
    expected = x + 0.3 * dual.position(x) - 0.7 * dual.channel(x)
    torch.testing.assert_close(dual(x), expected)


def _perturb(module: nn.Module) -> None:
    """Move zero-initialised scales and projections away from zero, so every parameter is on the gradient path."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "gamma" in name or "expand" in name or "region_embedding" in name:
                p.normal_(0, 0.5)


@pytest.mark.parametrize("name", ["cbam", "medical", "dual"])
def test_gradients_reach_the_input_and_every_parameter(name):
    torch.manual_seed(0)
    module = ATTENTIONS_2D[name](16)
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    module(x).square().mean().backward()  # at init: the input and the zero-initialised scales get gradients
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        if "gamma" in pname or "expand" in pname:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname
    module.zero_grad()
    _perturb(module)
    module(x).square().mean().backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_medical_attention_gives_per_label_maps_and_quadrant_gates():
    torch.manual_seed(0)
    module = MedicalAttention(32, n_labels=18)
    x = torch.randn(2, 32, 7, 7)
    out, maps = module.forward_with_maps(x)
    assert out.shape == x.shape and torch.equal(out, module(x))
    assert maps.shape == (2, 18, 7, 7) and (maps >= 0).all()
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(2, 18))
    gate = QuadrantGate(8)
    with torch.no_grad():
        gate.region_embedding.normal_()
    g = gate(torch.randn(1, 8, 8, 8))
    for rows in (slice(0, 4), slice(4, 8)):
        for cols in (slice(0, 4), slice(4, 8)):
            quadrant = g[..., rows, cols]
            assert torch.equal(quadrant, quadrant[..., :1, :1].expand_as(quadrant))  # constant within a quadrant
    assert not torch.equal(g[..., 0, 0], g[..., 7, 7])


@pytest.mark.parametrize("name", ["attention", "mean", "max"])
def test_slice_pools_shapes_and_weights_sum_to_one(name):
    torch.manual_seed(0)
    x = torch.randn(3, 12, 20)
    pooled, weights = SLICE_POOLS[name](20)(x)
    assert pooled.shape == (3, 20) and weights.shape == (3, 12)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))


@pytest.mark.parametrize("name", ["attention", "mean", "max"])
def test_slice_pooling_does_not_depend_on_the_slice_order(name):
    torch.manual_seed(0)
    pool, x, perm = SLICE_POOLS[name](20), torch.randn(3, 12, 20), torch.randperm(12)
    pooled, weights = pool(x)
    pooled_perm, weights_perm = pool(x[:, perm])
    torch.testing.assert_close(pooled_perm, pooled)
    torch.testing.assert_close(weights_perm, weights[:, perm])


def test_attention_pool_is_ilse_gated_attention():
    torch.manual_seed(0)
    pool, x = SliceAttentionPool(20, hidden=8), torch.randn(2, 5, 20)
    scores = pool.score(torch.tanh(pool.value(x)) * torch.sigmoid(pool.gate(x))).squeeze(-1)
    pooled, weights = pool(x)
    torch.testing.assert_close(weights, scores.softmax(dim=1))
    torch.testing.assert_close(pooled, (weights[..., None] * x).sum(dim=1))
    mask = torch.tensor([[True, True, False, True, False], [True] * 5])
    pooled_masked, weights_masked = pool(x, mask)
    assert (weights_masked[0, [2, 4]] == 0).all()
    torch.testing.assert_close(pooled_masked[0], pool(x[:1, [0, 1, 3]])[0][0])


def test_mean_and_max_pools():
    x = torch.tensor([[[1.0, 5.0], [3.0, -1.0], [2.0, 0.0]]])
    torch.testing.assert_close(MeanSlicePool()(x)[0], torch.tensor([[2.0, 4.0 / 3]]))
    pooled, weights = MaxSlicePool()(x)
    torch.testing.assert_close(pooled, torch.tensor([[3.0, 5.0]]))
    torch.testing.assert_close(weights, torch.tensor([[0.5, 0.5, 0.0]]))  # slice 0 holds feature 1's max, 1 feature 0's


def test_enhanced_classifier_is_the_seeds_layer_for_layer():
    head = EnhancedClassifier(2048, 18)
    layout = [(type(m).__name__, getattr(m, "p", None), getattr(m, "in_features", None)) for m in head]
    assert layout == [
        ("Dropout", 0.3, None),
        ("Linear", None, 2048),
        ("ReLU", None, None),
        ("BatchNorm1d", None, None),
        ("Dropout", 0.15, None),
        ("Linear", None, 512),
        ("ReLU", None, None),
        ("Dropout", 0.075, None),
        ("Linear", None, 256),
    ]
    assert [m.out_features for m in head if isinstance(m, nn.Linear)] == [512, 256, 18]
    assert head[3].num_features == 512
    assert head(torch.randn(4, 2048)).shape == (4, 18)


def test_enhanced_head_pools_the_map_and_plain_head_is_one_linear():
    torch.manual_seed(0)
    head = EnhancedHead(64, 18).eval()
    x = torch.randn(2, 64, 7, 7)
    torch.testing.assert_close(head(x), head.classifier(x.mean(dim=(2, 3))))
    plain = PlainHead(64)
    assert isinstance(plain, nn.Linear) and (plain.in_features, plain.out_features) == (64, 18)
    torch.testing.assert_close(plain(x.mean(dim=(2, 3))), F.linear(x.mean(dim=(2, 3)), plain.weight, plain.bias))
    # its optional dropout acts in training only and adds no weights: the same state dict as without it
    dropped = PlainHead(64, dropout=0.5)
    assert set(dropped.state_dict()) == set(plain.state_dict()) == {"weight", "bias"}
    dropped.load_state_dict(plain.state_dict())
    pooled = x.mean(dim=(2, 3))
    torch.testing.assert_close(dropped.eval()(pooled), plain(pooled))
    assert not torch.allclose(dropped.train()(pooled), plain(pooled))


def test_volume3d_classifier_on_a_tiny_volume():
    torch.manual_seed(0)
    net = Volume3DClassifier(in_channels=1, n_out=18, depth=10, widen_factor=0.25)
    assert net(torch.rand(2, 1, 8, 32, 32)).shape == (2, 18)
    assert net.eval()(torch.rand(1, 1, 8, 32, 32)).shape == (1, 18)
    assert net.net.conv1.in_channels == 1
    with pytest.raises(FinescaleError, match="depth 12"):
        Volume3DClassifier(depth=12)


def test_volume3d_stem_strides_like_medicalnet_and_old_checkpoints_keep_monais_stem():
    from finescale.pipelines.ct.config import CTConfig, upgrade_checkpoint_config

    net = Volume3DClassifier(widen_factor=0.25)
    assert net.net.conv1.stride == (2, 2, 2)  # the stem halves every axis, as in MedicalNet
    assert Volume3DClassifier(widen_factor=0.25, stem_stride=1).net.conv1.stride == (1, 1, 1)
    old = {"pipeline": "ct", "model": {"dimension": "3d"}}  # written before the two fields existed
    upgraded = CTConfig.model_validate(upgrade_checkpoint_config(old))
    assert (upgraded.model.volume_width, upgraded.model.volume_stem_stride) == (1.0, 1)
    assert upgraded.model.head_dropout == 0.0  # a plain head of then had no dropout, whatever today's default
    today = CTConfig.model_validate({"pipeline": "ct"})
    assert upgrade_checkpoint_config(today.model_dump(mode="json")) == today.model_dump(mode="json")
