"""Piece locator: piece photo + puzzle picture -> the piece's box in the puzzle and its rotation k x 90 degrees.

Both images go through a feature pyramid (P3..P5, shared by default). Two heads:

* ``dense`` (default): the piece's spatial feature map is the kernel of a (zero-)normalised correlation with the
  puzzle at each level; the levels, scaled by learned temperatures, are fused at P3 into position logits trained with a
  softmax cross-entropy over positions (Gaussian target at the true centre). A small MLP at the peak cell regresses
  the sub-cell offset and the box size. Public work on this problem found classification over positions to train
  where box regression from pooled correlation stalls, and the piece's spatial map to beat one pooled descriptor.
* ``regression``: the seed's head, pooled correlation -> scale processors -> fusion -> MLP -> sigmoid box,
  trained with 0.5 CIoU + 0.5 SmoothL1.

Rotation: ``correlate`` (default) matches the piece at each of its 4 quarter turns (K = 4 templates) and reads the
rotation from the joint softmax over rotation x position; ``head`` is the seed's classifier on pooled P5 features.

Batch dict (see ``puzzle.data``): ``piece`` (B, 3, p, p) and ``puzzle`` (B, 3, H, W) in [0, 1], ``box`` (B, 4) xyxy
normalised to the puzzle input, ``rotation`` (B,) long in 0..3.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import complete_box_iou_loss

from finescale.losses import smooth_l1
from finescale.nn.correlation import LearnableTemperature, dense_correlation, pooled_correlation, rot90_stack
from finescale.nn.fpn import FeaturePyramid
from finescale.pipelines.puzzle.config import PuzzleModelConfig

NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _upsample_to(maps: list[torch.Tensor], size: torch.Size) -> list[torch.Tensor]:
    return [
        m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps
    ]


def _rows(batch_index: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Index into a batch of 1 (a shared puzzle) or of B."""
    return torch.zeros_like(batch_index) if maps.shape[0] == 1 else batch_index


class DenseHead(nn.Module):
    """Dense correlation at every level -> fused position logits at P3; a box regressor evaluated at chosen cells."""

    def __init__(
        self,
        *,
        channels: int,
        levels: int = 3,
        temperature: float = 10.0,
        width: int = 128,
        piece_mask: bool = False,
        zero_mean: bool = False,
    ) -> None:
        super().__init__()
        self.zero_mean = zero_mean
        self.temperatures = nn.ModuleList(LearnableTemperature(temperature) for _ in range(levels))
        # optional learned weight per piece cell: the photo's table margin and the box corners outside the piece's
        # outline carry no puzzle content; zero-initialised, so training starts from the plain correlation
        self.masks = nn.ModuleList(nn.Conv2d(channels, 1, 1) for _ in range(levels)) if piece_mask else None
        for mask in self.masks or []:
            nn.init.zeros_(mask.weight)
            nn.init.zeros_(mask.bias)
        # a residual refinement: at initialisation the logits are the plain sum of the scaled similarities
        self.refine = nn.Sequential(nn.Conv2d(levels, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1))
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)
        # input: puzzle P3 vector at the cell, piece P3 pooled to 3x3 (keeps its extent), 3x3 softmax of the logits
        self.regressor = nn.Sequential(nn.Linear(10 * channels + 9, width), nn.ReLU(), nn.Linear(width, 4))

    def forward(
        self, pieces: list[torch.Tensor], puzzles: list[torch.Tensor], *, band_bytes: int | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``pieces`` per level (B, K, C, h, w), ``puzzles`` per level (B or 1, C, H, W) -> logits (B, K, H3, W3)
        and the per-level similarity maps (B, K, H_l, W_l). ``band_bytes`` bounds the correlation's working set."""
        maps = []
        for level, (piece, puzzle) in enumerate(zip(pieces, puzzles, strict=True)):
            if self.masks is not None:
                weight = self.masks[level](piece.flatten(0, 1)).sigmoid()
                piece = piece * weight.view(*piece.shape[:2], 1, *piece.shape[-2:])
            rows = None
            if band_bytes:
                c, h, w = piece.shape[-3:]
                rows = max(1, band_bytes // (4 * c * h * w * puzzle.shape[-1]))
            maps.append(dense_correlation(piece, puzzle, max_rows=rows, zero_mean=self.zero_mean))
        scaled = _upsample_to([t(m) for t, m in zip(self.temperatures, maps, strict=True)], maps[0].shape[-2:])
        stack = torch.stack(scaled, dim=2)  # (B, K, L, H3, W3)
        b, k, _, h3, w3 = stack.shape
        logits = stack.sum(dim=2) + self.refine(stack.flatten(0, 1)).view(b, k, h3, w3)
        return logits, maps

    def regress(
        self, piece_p3: torch.Tensor, puzzle_p3: torch.Tensor, logits: torch.Tensor, cells: torch.Tensor
    ) -> torch.Tensor:
        """Box parameters at cells: piece P3 at the chosen rotation (B, C, h, w), puzzle P3 (B or 1, C, H, W),
        logits at that rotation (B, H, W), cells (B, N, 2) long (y, x) -> (B, N, 4) = (dx, dy, log w, log h) with
        the centre at (cell + d) x stride and the size in units of the piece input's side."""
        b, n = cells.shape[:2]
        ys, xs = cells[..., 0], cells[..., 1]
        index = torch.arange(b, device=cells.device)[:, None].expand(b, n)
        feats = puzzle_p3.permute(0, 2, 3, 1)[_rows(index, puzzle_p3), ys, xs]  # (B, N, C)
        desc = F.adaptive_avg_pool2d(piece_p3, 3).flatten(1)[:, None].expand(b, n, -1)
        # the logits' local shape tells the sub-cell offset; detached so that only the position loss shapes them
        padded = F.pad(logits.detach(), (1, 1, 1, 1), value=-1e4)
        patch = torch.stack([padded[index, ys + 1 + dy, xs + 1 + dx] for dy, dx in NEIGHBOURS], dim=-1)
        return self.regressor(torch.cat([feats, desc, patch.softmax(dim=-1)], dim=-1))


class RegressionHead(nn.Module):
    """The seed's MultiScaleCorrelation: pooled correlation / learned temperature (init sqrt(C)) per level ->
    softmax over positions -> scale processor -> upsample to P3 -> fusion + global pool -> MLP -> sigmoid box."""

    def __init__(self, *, channels: int, levels: int = 3) -> None:
        super().__init__()
        self.temperatures = nn.ModuleList(LearnableTemperature(math.sqrt(channels), divide=True) for _ in range(levels))
        self.scale_processors = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.BatchNorm2d(64),
                nn.ReLU(),
            )
            for _ in range(levels)
        )
        self.fusion = nn.Sequential(
            nn.Conv2d(64 * levels, 128, 1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.position_regressor = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 4), nn.Sigmoid())

    def forward(self, pieces: list[torch.Tensor], puzzles: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level: scaled pooled correlation (B, K, H_l, W_l)."""
        return [t(pooled_correlation(p, q)) for t, p, q in zip(self.temperatures, pieces, puzzles, strict=True)]

    def box(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Per-level logits at one rotation [(B, H_l, W_l)] -> box (B, 4) xyxy normalised to the puzzle input."""
        processed = []
        for processor, logits in zip(self.scale_processors, maps, strict=True):
            probs = logits.flatten(1).softmax(dim=1).view_as(logits)[:, None]
            processed.append(processor(probs))
        fused = self.fusion(torch.cat(_upsample_to(processed, processed[0].shape[-2:]), dim=1)).flatten(1)
        return self.position_regressor(fused)


class RotationClassifier(nn.Module):
    """The seed's rotation head: pooled P5 of piece and puzzle, concatenated -> MLP -> 4 logits."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * channels, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 4))

    def forward(self, piece_p5: torch.Tensor, puzzle_p5: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w), (B or 1, C, H, W) -> (B, 4)."""
        piece = piece_p5.mean(dim=(2, 3))
        puzzle = puzzle_p5.mean(dim=(2, 3)).expand(piece.shape[0], -1)
        return self.mlp(torch.cat([piece, puzzle], dim=1))


class PuzzleLocator(nn.Module):
    """Batch dict -> position/rotation scores; ``loss`` and ``predict`` as every finescale model.

    The parts are also public so that whole-puzzle search (``puzzle.whole_puzzle``) can encode the puzzle once and
    score many pieces against it: ``encode_puzzle`` -> ``encode_pieces`` -> ``score`` -> ``decode``.
    """

    def __init__(
        self,
        *,
        puzzle_encoder: FeaturePyramid,
        piece_encoder: FeaturePyramid | None,
        head: DenseHead | RegressionHead,
        rotation_classifier: RotationClassifier | None,
        rotation_input: str = "image",
        target_sigma: float = 1.0,
        box_weight: float = 1.0,
        rotation_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.puzzle_encoder = puzzle_encoder
        self.piece_encoder = piece_encoder  # None: the puzzle's pyramid serves the piece too
        self.head = head
        self.rotation_classifier = rotation_classifier
        self.match_rotations = rotation_classifier is None
        self.rotate_features = rotation_input == "features"
        self.target_sigma = target_sigma
        self.box_weight = box_weight
        self.rotation_weight = rotation_weight
        self.stride = puzzle_encoder.strides[0]

    @classmethod
    def from_config(cls, cfg: PuzzleModelConfig, *, load_weights: bool = True) -> PuzzleLocator:
        """``load_weights=False``: the architecture only, no pretrained or --weights file read (a checkpoint
        brings every weight)."""
        cfg = getattr(cfg, "model", cfg)  # the whole run config works too
        weights = Path(cfg.weights) if cfg.weights and load_weights else None

        def pyramid() -> FeaturePyramid:
            return FeaturePyramid(
                name=cfg.backbone,
                out_channels=cfg.fpn_channels,
                pretrained=cfg.pretrained and load_weights,
                weights=weights,
                norm=cfg.norm,
            )

        channels = cfg.fpn_channels
        if cfg.head == "dense":
            head = DenseHead(
                channels=channels,
                temperature=cfg.temperature,
                width=cfg.regressor_width,
                piece_mask=cfg.piece_mask,
                zero_mean=cfg.zero_mean,
            )
        else:
            head = RegressionHead(channels=channels)
        return cls(
            puzzle_encoder=pyramid(),
            piece_encoder=None if cfg.shared_backbone else pyramid(),
            head=head,
            rotation_classifier=RotationClassifier(channels=channels) if cfg.rotation == "head" else None,
            rotation_input=cfg.rotation_input,
            target_sigma=cfg.target_sigma,
            box_weight=cfg.box_weight,
            rotation_weight=cfg.rotation_weight,
        )

    @property
    def dense(self) -> bool:
        return isinstance(self.head, DenseHead)

    # ------------------------------------------------------------------------------------------------ parts
    def encode_puzzle(self, puzzle: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> [P3, P4, P5], each (B, C, H / s, W / s)."""
        return self.puzzle_encoder(puzzle)

    def encode_pieces(self, piece: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, p, p) in [0, 1] -> per level (B, K, C, h, w): K = 4 quarter-turn hypotheses (entry r undoes a
        rotation by r) when rotations are matched, else K = 1 (the piece as photographed)."""
        encoder = self.piece_encoder or self.puzzle_encoder
        if not self.match_rotations:
            return [level[:, None] for level in encoder(piece)]
        if self.rotate_features:
            return [rot90_stack(level) for level in encoder(piece)]
        b = piece.shape[0]
        return [level.view(b, 4, *level.shape[1:]) for level in encoder(rot90_stack(piece).flatten(0, 1))]

    def score(
        self, pieces: list[torch.Tensor], puzzles: list[torch.Tensor], *, band_bytes: int | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Encoded pieces (per level (B, K, C, h, w)) against encoded puzzles (per level (B or 1, C, H, W)).

        Returns ``maps`` (per level (B, K, H_l, W_l); dense: similarities in [-1, 1], regression: scaled pooled
        correlation), ``rotation_logits`` (B, 4) and, for the dense head, ``logits`` (B, K, H3, W3)."""
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        if self.dense:
            out["logits"], out["maps"] = self.head(pieces, puzzles, band_bytes=band_bytes)
            marginal = out["logits"].flatten(2).logsumexp(dim=2)
        else:
            out["maps"] = self.head(pieces, puzzles)
            marginal = sum(m.flatten(2).logsumexp(dim=2) for m in out["maps"])
        if self.match_rotations:
            out["rotation_logits"] = marginal  # the rotation marginal of the joint rotation x position softmax
        else:
            out["rotation_logits"] = self.rotation_classifier(pieces[-1][:, 0], puzzles[-1])
        return out

    def forward(self, batch: dict) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        pieces = self.encode_pieces(batch["piece"])
        puzzles = self.encode_puzzle(batch["puzzle"])
        return {**self.score(pieces, puzzles), "pieces": pieces, "puzzles": puzzles}

    def _template_index(self, rotation: torch.Tensor) -> torch.Tensor:
        """Which of the K templates belongs to a rotation: itself when matching all four, else the only one."""
        return rotation if self.match_rotations else torch.zeros_like(rotation)

    # ------------------------------------------------------------------------------------------------ loss
    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """Dense: ``pos`` (soft CE over rotation x position), ``rot``, ``box`` (L1 of offset and log size at the
        3x3 cells around the true centre). Regression: ``box`` = 0.5 ``ciou`` + 0.5 ``l1``, ``rot``."""
        return self._losses(batch, self(batch))

    def loss_and_predict(self, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:meth:`loss` and :meth:`predict` from one forward pass (validation scores both)."""
        out = self(batch)
        with torch.no_grad():
            prediction = self._decode_batch(batch, out)
        return self._losses(batch, out), prediction

    def _losses(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        rotation = batch["rotation"].long()
        losses = {"rot": F.cross_entropy(out["rotation_logits"], rotation)}
        template = self._template_index(rotation)
        index = torch.arange(rotation.shape[0], device=rotation.device)
        if self.dense:
            losses.update(self._dense_losses(batch, out, template, index))
            total = losses["pos"] + self.box_weight * losses["box"]
        else:
            pred = self.head.box([m[index, template] for m in out["maps"]])
            target = batch["box"].to(pred.dtype)
            losses["ciou"] = complete_box_iou_loss(pred, target, reduction="mean")
            losses["l1"] = smooth_l1(pred, target)
            losses["box"] = 0.5 * losses["ciou"] + 0.5 * losses["l1"]
            total = self.box_weight * losses["box"]
        losses["loss"] = total + self.rotation_weight * losses["rot"]
        return losses

    def _dense_losses(self, batch: dict, out: dict, template: torch.Tensor, index: torch.Tensor) -> dict:
        logits = out["logits"]  # (B, K, H, W)
        b, _, h, w = logits.shape
        in_h, in_w = batch["puzzle"].shape[-2:]
        box = batch["box"].to(logits.dtype) * logits.new_tensor([in_w, in_h, in_w, in_h])  # pixels
        u = (box[:, 0] + box[:, 2]) / (2 * self.stride)  # centre in cell units: cell x spans [x, x + 1)
        v = (box[:, 1] + box[:, 3]) / (2 * self.stride)
        target = torch.zeros_like(logits)
        target[index, template] = position_target(u, v, (h, w), self.target_sigma)
        losses = {"pos": F.cross_entropy(logits.flatten(1), target.flatten(1))}
        cx, cy = u.floor().long().clamp(0, w - 1), v.floor().long().clamp(0, h - 1)
        offsets = torch.tensor(NEIGHBOURS, device=logits.device)
        cells = torch.stack([cy, cx], dim=1)[:, None] + offsets[None]
        cells = torch.stack([cells[..., 0].clamp(0, h - 1), cells[..., 1].clamp(0, w - 1)], dim=-1)  # (B, 9, 2)
        piece_px = batch["piece"].shape[-1]
        pred = self.head.regress(out["pieces"][0][index, template], out["puzzles"][0], logits[index, template], cells)
        size = torch.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], dim=1).clamp_min(1.0) / piece_px
        reg_target = torch.cat(
            [
                torch.stack([u[:, None] - cells[..., 1], v[:, None] - cells[..., 0]], dim=-1),
                size.log()[:, None].expand(b, cells.shape[1], 2),
            ],
            dim=-1,
        )
        losses["box"] = F.l1_loss(pred, reg_target)
        return losses

    # ------------------------------------------------------------------------------------------------ predict
    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        """``box`` (B, 4) xyxy normalised to the puzzle input, ``rotation`` (B,), ``confidence`` (B,),
        ``rotation_probs`` (B, 4)."""
        return self._decode_batch(batch, self(batch))

    def _decode_batch(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        return self.decode(
            out, out["pieces"], out["puzzles"], input_hw=batch["puzzle"].shape[-2:], piece_px=batch["piece"].shape[-1]
        )

    @torch.no_grad()
    def decode(
        self,
        scores: dict,
        pieces: list[torch.Tensor],
        puzzles: list[torch.Tensor],
        *,
        input_hw: tuple[int, int],
        piece_px: int,
    ) -> dict[str, torch.Tensor]:
        """Scores from :meth:`score` -> predictions (see :meth:`predict`). ``input_hw`` is the puzzle input's size,
        ``piece_px`` the piece input's side (the unit of the regressed size).

        Confidence (dense head): the softmax mass within one cell of the peak (the position target spreads over
        about that much), times the rotation probability when a classifier gives the rotation."""
        rotation_probs = scores["rotation_logits"].softmax(dim=1)
        b = rotation_probs.shape[0]
        index = torch.arange(b, device=rotation_probs.device)
        in_h, in_w = input_hw
        if not self.dense:
            rotation = rotation_probs.argmax(dim=1)
            template = self._template_index(rotation)
            box = self.head.box([m[index, template] for m in scores["maps"]])
            return {
                "box": box,
                "rotation": rotation,
                "confidence": rotation_probs[index, rotation],
                "rotation_probs": rotation_probs,
            }
        logits = scores["logits"]
        _, k, h, w = logits.shape
        probs = logits.flatten(1).softmax(dim=1).view_as(logits)
        peak = probs.flatten(1).argmax(dim=1)
        template, y, x = peak // (h * w), (peak // w) % h, peak % w
        near = F.avg_pool2d(probs[index, template][:, None], 3, stride=1, padding=1, count_include_pad=True) * 9
        confidence = near[index, 0, y, x]
        if self.match_rotations:
            rotation, rotation_probs = template, probs.sum(dim=(2, 3))
        else:
            rotation = rotation_probs.argmax(dim=1)
            confidence = confidence * rotation_probs[index, rotation]
        cells = torch.stack([y, x], dim=1)[:, None]
        params = self.head.regress(pieces[0][index, template], puzzles[0], logits[index, template], cells)
        dx, dy, log_w, log_h = params[:, 0].unbind(dim=1)
        cx, cy = (x + dx) * self.stride, (y + dy) * self.stride
        bw, bh = piece_px * log_w.exp(), piece_px * log_h.exp()
        scale = logits.new_tensor([in_w, in_h, in_w, in_h])
        box = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1) / scale
        return {"box": box, "rotation": rotation, "confidence": confidence, "rotation_probs": rotation_probs}

    @torch.no_grad()
    def correlation_maps(self, batch: dict) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """For visualisation: ``levels`` = per-level maps (B, K, H_l, W_l) (dense: similarities in [-1, 1]) and
        ``probs`` (B, K, H3, W3), the position distribution at P3 (dense: the joint rotation x position softmax)."""
        out = self(batch)
        logits = out["logits"] if self.dense else out["maps"][0]
        probs = logits.flatten(1 if self.dense else 2).softmax(dim=-1).view_as(logits)
        return {"levels": out["maps"], "probs": probs}


def position_target(u: torch.Tensor, v: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Target distribution over cells (B, H, W) for centres (u, v) in cell units (cell x spans [x, x + 1)):
    a Gaussian of ``sigma`` cells around the centre, or one-hot at the cell holding it for ``sigma = 0``."""
    h, w = size
    if sigma <= 0:
        cx, cy = u.floor().long().clamp(0, w - 1), v.floor().long().clamp(0, h - 1)
        return F.one_hot(cy * w + cx, h * w).to(u.dtype).view(-1, h, w)
    xs = torch.arange(w, device=u.device, dtype=u.dtype) + 0.5
    ys = torch.arange(h, device=u.device, dtype=u.dtype) + 0.5
    d2 = (xs[None, None, :] - u[:, None, None]) ** 2 + (ys[None, :, None] - v[:, None, None]) ** 2
    weights = torch.exp(-d2 / (2 * sigma**2))
    return weights / weights.flatten(1).sum(dim=1).clamp_min(1e-12)[:, None, None]
