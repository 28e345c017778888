"""The EMA teacher: one update against a hand computation, buffers copied, and a real Lightning Trainer."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from finescale.engine.ema import EMATeacher, ema_update_
from finescale.errors import FinescaleError


def pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    teacher = copy.deepcopy(student).requires_grad_(False)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student[1].running_mean.fill_(0.25)
        student[1].running_var.fill_(4.0)
        student[1].num_batches_tracked.fill_(7)
    return teacher, student


def test_one_update_matches_the_hand_computation():
    teacher, student = pair()
    before = [p.clone() for p in teacher.parameters()]
    ema_update_(teacher, student, 0.9)
    for t, t0, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * s, rtol=0, atol=1e-6)
    # the weight's first entry written out
    w0, s0 = before[0][0, 0].item(), student[0].weight[0, 0].item()
    assert teacher[0].weight[0, 0].item() == pytest.approx(0.9 * w0 + 0.1 * s0, abs=1e-6)
    # buffers are copied, not averaged
    assert torch.equal(teacher[1].running_mean, torch.full((2,), 0.25))
    assert torch.equal(teacher[1].running_var, torch.full((2,), 4.0))
    assert teacher[1].num_batches_tracked.item() == 7


def test_momentum_zero_copies_and_one_keeps():
    teacher, student = pair()
    kept = [p.clone() for p in teacher.parameters()]
    ema_update_(teacher, student, 1.0)
    assert all(torch.equal(t, k) for t, k in zip(teacher.parameters(), kept, strict=True))
    ema_update_(teacher, student, 0.0)
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters(), strict=True))


def test_the_teacher_gets_no_gradients():
    teacher, student = pair()
    student.train()
    loss = student(torch.randn(4, 3)).sum() + teacher(torch.randn(4, 3)).sum()
    loss.backward()
    ema_update_(teacher, student, 0.5)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_structure_mismatch_and_bad_momentum_are_refused():
    teacher, student = pair()
    with pytest.raises(FinescaleError):
        ema_update_(nn.Linear(3, 2), student, 0.5)
    with pytest.raises(ValueError):
        ema_update_(teacher, student, 1.5)
    with pytest.raises(ValueError):
        EMATeacher(1.0)


class ToyTask(L.LightningModule):
    """A student ``model`` and its frozen copy ``teacher``; records the student's weights after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
        self.teacher = copy.deepcopy(self.model).requires_grad_(False)
        self.initial = {k: v.clone() for k, v in self.teacher.state_dict().items()}
        self.after_step: list[dict[str, torch.Tensor]] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.model(x).squeeze(1), y)

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        # the student after this step's optimizer update: what the EMA callback sees (it never changes the student)
        self.after_step.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.5)


def fit_toy(callback: EMATeacher, samples: int, max_steps: int, **trainer_options) -> ToyTask:
    """A ToyTask trained by a real Lightning Trainer with ``callback``, batches of 4 seeded samples."""
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(samples, 4), torch.randn(samples)), batch_size=4)
    task = ToyTask()
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        **trainer_options,
    )
    trainer.fit(task, train_dataloaders=data)
    return task


def test_the_teacher_follows_three_steps_of_a_real_trainer():
    task = fit_toy(EMATeacher(0.75, ramp=False), 12, 3)
    assert len(task.after_step) == 3
    params = {name for name, _ in task.model.named_parameters()}
    expected = {k: v.clone() for k, v in task.initial.items()}
    for student in task.after_step:
        for name in expected:
            expected[name] = 0.75 * expected[name] + 0.25 * student[name] if name in params else student[name]
    got = task.teacher.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6)
    # the teacher moved, lags the student, and never trained
    assert not torch.equal(got["0.weight"], task.initial["0.weight"])
    assert not torch.equal(got["0.weight"], task.model.state_dict()["0.weight"])
    assert all(not p.requires_grad and p.grad is None for p in task.teacher.parameters())


def test_accumulation_batches_do_not_update():
    task = fit_toy(EMATeacher(0.5, ramp=False), 16, 2, accumulate_grad_batches=2)
    # 4 batches, 2 optimizer steps: the teacher saw the student after batch 2 and after batch 4
    steps = [task.after_step[1], task.after_step[3]]
    expected = task.initial["2.weight"]
    for student in steps:
        expected = 0.5 * expected + 0.5 * student["2.weight"]
    torch.testing.assert_close(task.teacher.state_dict()["2.weight"], expected, rtol=0, atol=1e-6)


def test_the_ramp_averages_the_start_then_settles_at_the_momentum():
    ramp = EMATeacher(0.9)
    assert [ramp.momentum_at(n) for n in (1, 3, 9, 20)] == [0.5, 0.75, 0.9, 0.9]
    assert EMATeacher(0.9, ramp=False).momentum_at(1) == 0.9
    task = fit_toy(EMATeacher(0.999), 12, 3)
    # momenta 1/2, 2/3, 3/4: the teacher is the plain mean of the initial weights and the three students
    params = {name for name, _ in task.model.named_parameters()}
    got = task.teacher.state_dict()
    for name in params:
        states = [task.initial[name], *(student[name] for student in task.after_step)]
        torch.testing.assert_close(got[name], torch.stack(states).mean(0), rtol=0, atol=1e-6)
