"""Training curves as users know them from other trainers: training and validation losses on one epoch axis, the
training loss present even when an epoch is shorter than the logging interval, and readable axes for one epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from finescale.eval import curves as curve_plots

# What Lightning's CSVLogger writes for one 5-step epoch with log_every_n_steps=10: no per-step row at all, the
# epoch means (train/<name>_epoch) and the validation losses at the epoch's last step.
ONE_SHORT_EPOCH = """\
epoch,step,train/cls_epoch,train/loss_epoch,val/cls,val/loss,val/length_mae_mm
0,4,,,3.1,3.3,2.9
0,4,3.0,3.2,,,
"""

# Three 20-step epochs: per-step rows every 10 steps, then the epoch's mean and validation at its last step.
THREE_EPOCHS = (
    "epoch,step,train/loss_step,train/loss_epoch,val/loss\n"
    + "".join(f"{e},{s},{2.0 - s / 60},,\n" for e in range(3) for s in (e * 20 + 9, e * 20 + 19))
    + "".join(f"{e},{e * 20 + 19},,{1.9 - e / 3},{2.0 - e / 4}\n" for e in range(3))
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "metrics.csv"
    path.write_text(text)
    return path


def test_one_short_epoch_gives_train_and_val_loss_together(tmp_path: Path):
    curves = curve_plots.loss_curves(curve_plots.read_csv_log(_write(tmp_path, ONE_SHORT_EPOCH)))
    by = {(c.panel, c.name, c.split, c.kind): c for c in curves}
    assert set(by) == {
        ("loss", "loss", "train", "epoch"),
        ("loss", "loss", "val", "epoch"),
        ("loss terms", "cls", "train", "epoch"),
        ("loss terms", "cls", "val", "epoch"),
    }
    assert curves[0].panel == "loss"  # the total leads
    for curve in curves:
        assert curve.xs.tolist() == [1.0]  # one epoch trained
    assert by[("loss", "loss", "train", "epoch")].ys.tolist() == [3.2]
    paths = curve_plots.plot_training_curves(tmp_path / "metrics.csv", tmp_path / "plots")
    assert [p.name for p in paths] == [curve_plots.LOSS_PNG, curve_plots.VAL_PNG]


def test_steps_fall_between_the_epochs(tmp_path: Path):
    curves = curve_plots.loss_curves(curve_plots.read_csv_log(_write(tmp_path, THREE_EPOCHS)))
    step = next(c for c in curves if c.kind == "step")
    epoch = next(c for c in curves if c.kind == "epoch" and c.split == "train")
    assert np.allclose(step.xs, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0])  # steps 9, 19, 29 ... of 20-step epochs
    assert epoch.xs.tolist() == [1.0, 2.0, 3.0]
    assert next(c for c in curves if c.split == "val").xs.tolist() == [1.0, 2.0, 3.0]


def test_one_epoch_axis_is_readable():
    ax = Figure().subplots()
    ax.plot([1.0], [0.09], marker="o")
    curve_plots.epoch_limits(ax, 1.0, pad_left=True)
    low, high = ax.get_xlim()
    assert (low, high) == (0.5, 1.25)  # not -0.045 .. 0.045 around a lone point
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks == [1.0] and ax.get_xlabel() == "epoch"


def test_losses_named_by_the_task_go_with_the_losses(tmp_path: Path):
    # the puzzle's training step logs pos, box and rot: validation's pos, box and rot are losses, not metrics
    text = "epoch,step,train/pos_epoch,train/rot_epoch,train/loss_epoch,val/pos,val/rot,val/loss,val/puzzle_both\n"
    text += "0,9,,,,5.0,1.2,6.0,0.3\n0,9,4.0,1.0,5.0,,,,\n"
    curves = curve_plots.loss_curves(curve_plots.read_csv_log(_write(tmp_path, text)))
    assert {(c.panel, c.name, c.split) for c in curves} == {
        ("loss", "loss", "train"),
        ("loss", "loss", "val"),
        *(("loss terms", name, split) for name in ("pos", "rot") for split in ("train", "val")),
    }
