"""Multi-view transformer fusion (the seed's "MVViT") of one FPN level across the views of a tool.

The views of one cutting tool see the same defects from different angles and lighting, so a view where rust is
faint can borrow evidence from a view where it is plain. Full attention over every position of every view would
cost (V * h * w)^2 (P2 of the seed: 92,160 tokens), so the fusion runs in three steps whose attention never pairs
two full-resolution maps:

1. **pool**: each view's h*w tokens (LayerNorm + 2-D sine-cosine position + learned view embedding) are
   attention-pooled to K = min(pool_tokens, h*w) learned queries: K x h*w scores per view;
2. **mix**: ``layers`` pre-norm transformer layers over the pooled tokens, each a within-view self-attention
   (K x K per view), a cross-view attention over all V*K pooled tokens of the group (missing views masked out as
   keys) and an MLP;
3. **feed back**: every full-resolution position queries its own view's mixed tokens (h*w x K per view), which by
   then carry the other views' evidence; the result is added to the input through a zero-initialised projection,
   so an untrained fusion is exactly the identity and does not disturb a detector at the start.

Missing views (``view_mask`` False) are zeroed before anything reads them (so even NaN in them cannot leak), are
never keys of the cross-view attention, and come out equal to their input. Attention is
``torch.nn.functional.scaled_dot_product_attention``: memory-efficient / flash kernels on GPU and on CPU, so the
V*K x V*K cross-view scores of the seed's K = 2048 are not materialised.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.functional import scaled_dot_product_attention
from torch.utils.checkpoint import checkpoint


def sincos_position_2d(
    h: int, w: int, channels: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Fixed 2-D sine-cosine position code of an h x w grid -> (h*w, channels), row-major like ``flatten``.

    A quarter of the channels each hold sin(y), cos(y), sin(x), cos(x) at geometric frequencies (MAE's code on
    integer pixel indices), so it is defined for any h and w with no learned table to outgrow. Channels beyond
    4 * (channels // 4) are zero.
    """
    quarter = channels // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    angle_y = ys.reshape(-1, 1) * freqs  # (h*w, quarter)
    angle_x = xs.reshape(-1, 1) * freqs
    code = torch.cat([angle_y.sin(), angle_y.cos(), angle_x.sin(), angle_x.cos()], dim=1)
    code = nn.functional.pad(code, (0, channels - 4 * quarter))
    return code.to(dtype) if dtype is not None else code


class TokenAttention(nn.Module):
    """Multi-head attention of query tokens (N, Lq, C) over key tokens (N, Lk, C) -> (N, Lq, C).

    ``key_mask`` (N, Lk) bool, True = may be attended to, broadcast over heads and queries; every row must keep at
    least one key (the caller guarantees it, so no softmax sees only -inf).
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(channels, channels)
        self.key_value = nn.Linear(channels, 2 * channels)
        self.out = nn.Linear(channels, channels)

    def _split(self, tokens: Tensor) -> Tensor:
        n, length, channels = tokens.shape
        return tokens.reshape(n, length, self.heads, channels // self.heads).transpose(1, 2)

    def forward(self, queries: Tensor, keys: Tensor, key_mask: Tensor | None = None) -> Tensor:
        k, v = self.key_value(keys).chunk(2, dim=-1)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        attended = scaled_dot_product_attention(
            self._split(self.query(queries)), self._split(k), self._split(v), attn_mask=mask
        )
        return self.out(attended.transpose(1, 2).flatten(2))


class MultiViewLayer(nn.Module):
    """One pre-norm layer over pooled tokens (B, V, K, C): within-view self-attention, cross-view attention, MLP.

    ``key_mask`` (B, V*K) bool: which pooled tokens the cross-view attention may read.
    """

    def __init__(self, channels: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_view, self.norm_cross, self.norm_mlp = (nn.LayerNorm(channels) for _ in range(3))
        self.within_view = TokenAttention(channels, heads)
        self.across_views = TokenAttention(channels, heads)
        hidden = round(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, tokens: Tensor, key_mask: Tensor) -> Tensor:
        b, v, k, c = tokens.shape
        per_view = self.norm_view(tokens).reshape(b * v, k, c)
        tokens = tokens + self.within_view(per_view, per_view).reshape(b, v, k, c)
        group = self.norm_cross(tokens).reshape(b, v * k, c)
        tokens = tokens + self.across_views(group, group, key_mask).reshape(b, v, k, c)
        return tokens + self.mlp(self.norm_mlp(tokens))


class MultiViewFusion(nn.Module):
    """Fuses one FPN level across the views of each group: (B, V, C, h, w), (B, V) bool -> (B, V, C, h, w).

    ``pool_tokens`` learned queries are allocated once; a level with h*w < pool_tokens uses the first h*w of them.
    Attention sizes per group and head: pooling V x (K x h*w), within-view V x (K x K), cross-view (V*K)^2,
    feedback V x (h*w x K); for a fixed K all grow linearly in h*w. ``checkpointing`` recomputes the pooling, each
    layer and the feedback in the backward pass instead of storing their activations.
    """

    def __init__(
        self,
        channels: int,
        *,
        pool_tokens: int = 2048,
        layers: int = 2,
        heads: int = 8,
        mlp_ratio: float = 3.0,
        max_views: int = 8,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"multi-view fusion: channels ({channels}) must be divisible by heads ({heads})")
        if pool_tokens < 1 or layers < 0 or max_views < 1:
            raise ValueError("multi-view fusion: pool_tokens and max_views must be >= 1 and layers >= 0")
        self.channels, self.max_views, self.checkpointing = channels, max_views, checkpointing
        self.input_norm = nn.LayerNorm(channels)
        self.view_embedding = nn.Parameter(torch.zeros(max_views, channels))
        self.pool_queries = nn.Parameter(torch.zeros(pool_tokens, channels))
        nn.init.trunc_normal_(self.view_embedding, std=0.02)
        nn.init.trunc_normal_(self.pool_queries, std=0.02)
        self.pool = TokenAttention(channels, heads)
        self.layers = nn.ModuleList(MultiViewLayer(channels, heads, mlp_ratio) for _ in range(layers))
        self.pooled_norm = nn.LayerNorm(channels)
        self.feedback = TokenAttention(channels, heads)
        # zero output projection: the residual starts at exactly 0 and the fusion at the identity
        nn.init.zeros_(self.feedback.out.weight)
        nn.init.zeros_(self.feedback.out.bias)

    def _run(self, function: Callable[..., Tensor], *args: Tensor) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(function, *args, use_reentrant=False)
        return function(*args)

    def _pool(self, tokens: Tensor) -> Tensor:
        """(B*V, h*w, C) position-coded tokens -> (B*V, K, C) pooled by the first K learned queries."""
        k = min(self.pool_queries.shape[0], tokens.shape[1])
        queries = self.pool_queries[:k].expand(tokens.shape[0], -1, -1)
        return self.pool(queries, tokens)

    def _feed_back(self, tokens: Tensor, pooled: Tensor) -> Tensor:
        """(B*V, h*w, C) map tokens query (B*V, K, C) mixed tokens of their view -> (B*V, h*w, C) residual."""
        return self.feedback(tokens, self.pooled_norm(pooled))

    def forward(self, x: Tensor, view_mask: Tensor) -> Tensor:
        """x (B, V, C, h, w) features of V views per group; view_mask (B, V) bool, True where the view exists.

        Returns (B, V, C, h, w): x plus the fused residual; views with view_mask False are returned unchanged.
        """
        b, v, c, h, w = x.shape
        if c != self.channels or v > self.max_views or view_mask.shape != (b, v):
            raise ValueError(
                f"multi-view fusion expects (B, V<={self.max_views}, {self.channels}, h, w) features and a (B, V) "
                f"mask, got {tuple(x.shape)} and {tuple(view_mask.shape)}"
            )
        view_mask = view_mask.to(torch.bool)
        present = view_mask[:, :, None, None, None]
        clean = torch.where(present, x, torch.zeros((), dtype=x.dtype, device=x.device))
        tokens = self.input_norm(clean.flatten(3).transpose(2, 3))  # (B, V, h*w, C)
        position = sincos_position_2d(h, w, c, device=x.device, dtype=tokens.dtype)
        tokens = (tokens + position + self.view_embedding[:v, None, :].to(tokens.dtype)).reshape(b * v, h * w, c)

        pooled = self._run(self._pool, tokens)
        k = pooled.shape[1]
        pooled = pooled.reshape(b, v, k, c)
        # a group with no view at all may read its own (discarded) tokens, so no softmax row is empty
        readable = view_mask | ~view_mask.any(dim=1, keepdim=True)
        key_mask = readable[:, :, None].expand(b, v, k).reshape(b, v * k)
        for layer in self.layers:
            pooled = self._run(layer, pooled, key_mask)

        residual = self._run(self._feed_back, tokens, pooled.reshape(b * v, k, c))
        residual = residual.reshape(b, v, h, w, c).permute(0, 1, 4, 2, 3)
        return torch.where(present, x + residual.to(x.dtype), x)
