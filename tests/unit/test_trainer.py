from pathlib import Path

import pytest

from finescale.config import TrainerConfig
from finescale.engine.trainer import build_trainer


@pytest.mark.parametrize(("devices", "strategy", "expected"), [("auto", "auto", 1), ("1", "auto", 1), ("2", "ddp", 2)])
def test_the_devices_string_goes_to_lightning_as_given(tmp_path: Path, devices: str, strategy: str, expected: int):
    cfg = TrainerConfig(accelerator="cpu", devices=devices, strategy=strategy, progress=False)
    trainer = build_trainer(cfg, tmp_path, monitor="val_loss", mode="min")
    assert trainer.num_devices == expected
