"""The three embedding-attention blocks: output shapes, weights that sum to 1, gradients to every input."""

import pytest
import torch

from finescale.nn.attention import ATTENTIONS, DualAttention, HierarchicalAttention, TripleAttention

DIMS = {"visual_dim": 24, "company_dim": 8, "model_dim": 12, "dim": 16}


def inputs(batch: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return (
        torch.randn(batch, 24, requires_grad=True),
        torch.randn(batch, 8, requires_grad=True),
        torch.randn(batch, 12, requires_grad=True),
    )


@pytest.mark.parametrize(
    ("cls", "out_dim", "n_weights"),
    [(DualAttention, 32, 2), (TripleAttention, 16, 3), (HierarchicalAttention, 16, 3)],
)
def test_shapes_weights_and_gradients(cls: type, out_dim: int, n_weights: int):
    block = cls(**DIMS)
    visual, company, model = inputs()
    fused, weights = block(visual, company, model)
    assert block.out_dim == out_dim and fused.shape == (5, out_dim)
    assert weights.shape == (5, n_weights)
    assert torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))
    # a plain sum would be blind here: LayerNorm outputs sum to a constant, so its gradient is float noise
    (fused * torch.linspace(-1.0, 1.0, out_dim)).sum().backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in (visual, company, model))


def test_weights_depend_on_the_input():
    block = TripleAttention(**DIMS)
    visual, company, model = inputs()
    _, weights = block(visual, company, model)
    assert not torch.allclose(weights[0], weights[1])


def test_hierarchical_weights_factor_into_two_levels():
    block = HierarchicalAttention(**DIMS)
    visual, company, model = inputs()
    _, weights = block(visual, company, model)
    # the company and model shares are split from one "embeddings" share, so their ratio follows the inner gate
    c, m = block.company(company), block.model(model)
    inner = block.inner_gate(torch.cat([c, m], dim=1)).softmax(dim=1)
    torch.testing.assert_close(weights[:, 1] / weights[:, 1:].sum(dim=1), inner[:, 0])


def test_registry_names():
    assert list(ATTENTIONS) == ["dual", "hierarchical", "triple"]
    assert isinstance(ATTENTIONS.create("triple", **DIMS), TripleAttention)
