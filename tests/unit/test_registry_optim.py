import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import finescale
from finescale.engine.optim import ParamGroup, build_optimizer, build_param_groups, warmup_cosine
from finescale.errors import FinescaleError
from finescale.nn.fusion import FUSIONS
from finescale.registry import Registry


def test_registry_rejects_duplicates_and_names_the_choices():
    table = Registry("thing")
    table.add("a", dict)
    with pytest.raises(KeyError):
        table.add("a", list)
    with pytest.raises(FinescaleError, match="choose one of: a"):
        table.get("b")
    assert set(FUSIONS) == {"concat", "attention"}


def test_every_registry_is_looked_up_by_name_somewhere():
    # a table that nothing reads by name (was: BACKBONES, LOSSES) is dead code: use it or remove it
    sources = {p: p.read_text() for p in Path(finescale.__file__).parent.rglob("*.py")}
    tables = {m for text in sources.values() for m in re.findall(r"^(\w+) = Registry\(", text, re.MULTILINE)}
    assert tables == {"FUSIONS", "ATTENTIONS"}
    for table in tables:
        assert any(re.search(rf"\b{table}\.(create|get)\(", text) for text in sources.values()), table


def test_warmup_then_cosine_by_hand():
    kw = {"warmup_steps": 10, "total_steps": 110, "min_ratio": 0.1}
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine(9, **kw) == pytest.approx(1.0)
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(110, **kw) == pytest.approx(0.1)


def test_param_groups_have_their_own_lr_and_no_decay_on_norms():
    head, body = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), nn.Linear(4, 2)
    groups = build_param_groups([ParamGroup("head", head), ParamGroup("body", body, 0.1)], lr=1e-3, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == pytest.approx(1e-3) and by_name["head"]["weight_decay"] == 0.05
    assert by_name["body"]["lr"] == pytest.approx(1e-4)
    assert by_name["head_no_decay"]["weight_decay"] == 0.0 and len(by_name["head_no_decay"]["params"]) == 3
    optimizer, scheduler = build_optimizer(
        [ParamGroup("head", head)], lr=1.0, weight_decay=0.0, warmup_steps=4, total_steps=8, min_lr_ratio=0.0
    )
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)  # first warm-up step
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
