"""Multi-view transformer fusion (nn/multiview.py): shapes, identity at init, masking, information flow between
views, gradient checkpointing and the bound on attention sizes."""

import math

import pytest
import torch
from torch import nn

from finescale.nn import multiview
from finescale.nn.multiview import MultiViewFusion, sincos_position_2d


def _randomise_feedback(fusion: MultiViewFusion) -> MultiViewFusion:
    """An untrained fusion is the identity; most tests need one whose residual is not zero."""
    torch.manual_seed(123)
    nn.init.normal_(fusion.feedback.out.weight, std=0.2)
    nn.init.normal_(fusion.feedback.out.bias, std=0.2)
    return fusion


class AttentionSpy:
    """Records (batch*heads, queries, keys) of every scaled_dot_product_attention call, then runs the real one."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.real = multiview.scaled_dot_product_attention

    def __call__(self, q, k, v, **kwargs):
        self.calls.append((q.shape[0] * q.shape[1], q.shape[-2], k.shape[-2]))
        return self.real(q, k, v, **kwargs)

    def score_elements(self) -> int:
        return sum(n * lq * lk for n, lq, lk in self.calls)


@pytest.mark.parametrize(
    ("b", "v", "h", "w"),
    [(1, 8, 9, 4), (2, 3, 5, 7), (2, 8, 2, 2), (1, 1, 6, 6)],  # 2x2 = 4 and 5x7 = 35 < pool_tokens
)
def test_output_shape_and_pooled_token_count(monkeypatch, b, v, h, w):
    torch.manual_seed(0)
    fusion = _randomise_feedback(MultiViewFusion(16, pool_tokens=20, layers=2, heads=4))
    spy = AttentionSpy()
    monkeypatch.setattr(multiview, "scaled_dot_product_attention", spy)
    x = torch.randn(b, v, 16, h, w)
    out = fusion(x, torch.ones(b, v, dtype=torch.bool))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    k = min(20, h * w)
    pool, feedback = spy.calls[0], spy.calls[-1]
    assert pool == (b * v * 4, k, h * w)  # the first K learned queries read every position of a view
    assert feedback == (b * v * 4, h * w, k)  # every position reads its view's K mixed tokens


def test_untrained_fusion_is_exactly_the_identity():
    torch.manual_seed(0)
    fusion = MultiViewFusion(32, pool_tokens=16, layers=2, heads=8)
    x = torch.randn(2, 8, 32, 6, 5)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    for mode in (True, False):
        fusion.train(mode)
        assert torch.equal(fusion(x, mask), x)


def test_channels_must_divide_into_heads():
    with pytest.raises(ValueError, match="divisible by heads"):
        MultiViewFusion(30, heads=8)
    with pytest.raises(ValueError, match="expects"):
        MultiViewFusion(16, heads=4, max_views=4)(torch.zeros(1, 5, 16, 2, 2), torch.ones(1, 5, dtype=torch.bool))


def test_masked_views_neither_leak_nor_change():
    torch.manual_seed(0)
    fusion = _randomise_feedback(MultiViewFusion(16, pool_tokens=6, layers=2, heads=4, max_views=4)).eval()
    x = torch.randn(2, 4, 16, 5, 3)
    mask = torch.tensor([[True, True, False, True], [True, False, True, True]])
    out = fusion(x, mask)
    assert not torch.allclose(out[mask], x[mask])  # the valid views do change
    assert torch.equal(out[~mask], x[~mask])  # the missing ones come out as they went in

    changed = x.clone()
    changed[0, 2] = torch.randn(16, 5, 3) * 100
    changed[1, 1] = float("nan")  # a garbage view must not poison the group either
    out_changed = fusion(changed, mask)
    assert torch.equal(out_changed[mask], out[mask])
    assert torch.equal(out_changed[0, 2], changed[0, 2])
    assert torch.isnan(out_changed[1, 1]).all()


def test_a_masked_last_view_equals_leaving_it_out():
    # the zeroed tokens of a missing view still pool to non-zero tokens: only the key mask keeps them out
    torch.manual_seed(0)
    fusion = _randomise_feedback(MultiViewFusion(16, pool_tokens=6, layers=2, heads=4, max_views=4)).eval()
    x = torch.randn(2, 4, 16, 4, 4)
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    torch.testing.assert_close(fusion(x, mask)[:, :3], fusion(x[:, :3], mask[:, :3]), rtol=1e-5, atol=1e-5)


def test_a_single_or_no_valid_view_stays_finite():
    torch.manual_seed(0)
    fusion = _randomise_feedback(MultiViewFusion(16, pool_tokens=6, layers=2, heads=4, max_views=4))
    x = torch.randn(3, 4, 16, 4, 3, requires_grad=True)
    mask = torch.tensor([[False, False, True, False], [False, False, False, False], [True, True, True, True]])
    out = fusion(x, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.equal(out[1], x[1])
    assert not torch.allclose(out[0, 2], x[0, 2])


def _toy_views(n: int, generator: torch.Generator, views: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise in every view; view 3's channel 0 holds a value that view 0 must output (nothing else tells it)."""
    x = torch.randn(n, views, 16, 4, 4, generator=generator)
    value = torch.randn(n, generator=generator)
    x[:, 3, 0] = value[:, None, None]
    return x, value


def _train_toy(view_mask: torch.Tensor, steps: int = 100) -> tuple[float, float]:
    """Trains a tiny fusion to add view 3's value to view 0's channel 0 -> (held-out MSE, per-view optimum)."""
    torch.manual_seed(0)
    fusion = MultiViewFusion(16, pool_tokens=4, layers=1, heads=2, mlp_ratio=2.0, max_views=4)
    optimizer = torch.optim.AdamW(fusion.parameters(), lr=3e-3)

    def loss_of(x, value):
        residual = fusion(x, view_mask.expand(len(x), -1))[:, 0, 0] - x[:, 0, 0]
        return (residual - value[:, None, None]).pow(2).mean()

    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = loss_of(*_toy_views(64, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, value = _toy_views(512, torch.Generator().manual_seed(99))
    with torch.no_grad():
        held_out = float(loss_of(x, value))
    # view 0 is independent of the value, so the best any per-view model can do is predict its mean: MSE = variance
    return held_out, float(value.var(unbiased=False))


def test_information_flows_between_views():
    fused, per_view_optimum = _train_toy(torch.ones(1, 4, dtype=torch.bool))
    assert fused < 0.2 * per_view_optimum
    # control: with view 3 masked out the same training cannot beat a per-view model
    blocked, _ = _train_toy(torch.tensor([[True, True, True, False]]))
    assert blocked > 0.8 * per_view_optimum


def test_checkpointing_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = _randomise_feedback(MultiViewFusion(16, pool_tokens=8, layers=2, heads=4, max_views=4))
    checkpointed = MultiViewFusion(16, pool_tokens=8, layers=2, heads=4, max_views=4, checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 16, 5, 4)
    mask = torch.tensor([[True, True, False, True], [True, True, True, True]])
    results = []
    for fusion in (plain, checkpointed):
        xi = x.clone().requires_grad_(True)
        out = fusion(xi, mask)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        results.append((out.detach(), xi.grad, [p.grad for p in fusion.parameters()]))
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    torch.testing.assert_close(gx_a, gx_b, rtol=1e-6, atol=1e-7)
    for a, b in zip(gp_a, gp_b, strict=True):
        assert a is not None and a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_attention_never_pairs_two_full_resolution_maps(monkeypatch):
    views, k, heads = 3, 4, 2
    fusion = _randomise_feedback(MultiViewFusion(8, pool_tokens=k, layers=2, heads=heads, max_views=views))
    mask = torch.ones(1, views, dtype=torch.bool)
    scores = []
    for h in (6, 12, 18):  # h*w = 30, 60, 90: every map has more positions than the V*K = 12 pooled tokens
        spy = AttentionSpy()
        monkeypatch.setattr(multiview, "scaled_dot_product_attention", spy)
        fusion(torch.randn(1, views, 8, h, 5), mask)
        n = h * 5
        for _, queries, keys in spy.calls:
            assert min(queries, keys) <= views * k  # one side is always pooled tokens
            assert max(queries, keys) <= views * k or max(queries, keys) == n  # the map's h*w only as one side
        # pooling, per layer within-view + cross-view, feedback
        assert [c[1:] for c in spy.calls] == [(k, n)] + [(k, k), (views * k, views * k)] * 2 + [(n, k)]
        scores.append(spy.score_elements())
    # for a fixed K the attention-score count is an affine function of h*w: equal steps for equal steps in h*w
    assert scores[2] - scores[1] == scores[1] - scores[0] == 2 * views * heads * k * 30


def test_sincos_position_matches_the_hand_computation():
    code = sincos_position_2d(3, 4, 10)  # quarter = 2: frequencies 1 and 1/100; channels 8, 9 are padding
    y, x = 1, 2
    expected = [
        math.sin(y),
        math.sin(y / 100),
        math.cos(y),
        math.cos(y / 100),
        math.sin(x),
        math.sin(x / 100),
        math.cos(x),
        math.cos(x / 100),
        0.0,
        0.0,
    ]
    assert code.shape == (12, 10)
    torch.testing.assert_close(code[y * 4 + x], torch.tensor(expected))
