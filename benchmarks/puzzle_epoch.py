"""Where a quick-preset ``puzzle`` training epoch spends its time: loading batches, forward (+ loss), backward, the
optimiser, validation and the rest, from Lightning's ``SimpleProfiler`` timed in CPU seconds of the main thread,
plus cProfile's top functions (``cprofile.txt``) and the data's one-off set-up (piece cut-outs, rescaling), which
runs before training (``train_seconds`` leaves it out).

    finescale synth puzzles --out data/puzzles --n 600 --seed 0     # the demo's data
    OMP_NUM_THREADS=1 python benchmarks/puzzle_epoch.py --data data/puzzles --out runs/profile_puzzle

With one torch thread (``OMP_NUM_THREADS=1``) every part runs on the main thread, so its CPU seconds are its cost
whatever else the machine runs: compare those (and the shares) between versions, not wall seconds, on a shared
machine. ``--clock wall`` times wall seconds instead (for an idle machine and several threads). ``--epochs``
(default 1); any config field as ``--set key=value`` (``--set batch_size=32``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.profilers import SimpleProfiler

from finescale.config import build_config
from finescale.engine.run import fit
from finescale.pipelines.puzzle.config import PuzzleConfig
from finescale.pipelines.puzzle.data import PuzzleDataModule
from finescale.pipelines.puzzle.task import PuzzleTask

# Lightning's profiler actions (exact names), grouped into the parts asked about. Lightning runs the training step
# and the backward inside the optimiser step's closure, so the optimiser's own share is what is left of that step.
TRAINING_STEP = "[Strategy]SingleDeviceStrategy.training_step"
BACKWARD = "[Strategy]SingleDeviceStrategy.backward"
OPTIMIZER_STEP = "[LightningModule]PuzzleTask.optimizer_step"
LOADING = "[_TrainingEpochLoop].train_dataloader_next"
VALIDATION = ("[Strategy]SingleDeviceStrategy.validation_step", "[_EvaluationLoop].val_next")
VALIDATION_END = "[LightningModule]PuzzleTask.on_validation_epoch_end"


class CpuProfiler(SimpleProfiler):
    """SimpleProfiler timing the CPU seconds of the calling thread (``--clock cpu``) or wall seconds."""

    def __init__(self, *args, clock=time.thread_time, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def start(self, action_name: str) -> None:
        self.current_actions[action_name] = self.clock()

    def stop(self, action_name: str) -> None:
        self.recorded_durations[action_name].append(self.clock() - self.current_actions.pop(action_name))


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of `finescale synth puzzles`")
    parser.add_argument("--out", type=Path, required=True, help="folder for the run and the profiles (replaced)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    args = parser.parse_args()

    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    overrides |= {"train_json": str(args.data / "train.json"), "val_json": str(args.data / "val.json")}
    overrides |= {"epochs": args.epochs, "progress": False}
    cfg = build_config(PuzzleConfig, preset="quick", overrides=overrides)
    shutil.rmtree(args.out, ignore_errors=True)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter

    start = clock()
    datamodule = PuzzleDataModule(cfg)
    datamodule.setup("fit")  # the data's one-off part: records, piece cut-outs, rescaled puzzles
    setup_s = clock() - start

    profiler = CpuProfiler(dirpath=args.out, filename="lightning", clock=clock)
    init = L.Trainer.__init__

    def with_profiler(self, *a, **kw) -> None:
        init(self, *a, **{**kw, "profiler": profiler})

    L.Trainer.__init__ = with_profiler
    cprofile = cProfile.Profile()
    start, wall = clock(), time.perf_counter()
    cprofile.enable()
    summary = fit(
        cfg,
        args.out / "run",
        build_task=lambda **kw: PuzzleTask(cfg.model_dump(mode="json"), **kw),
        datamodule=datamodule,
    )
    cprofile.disable()
    fit_s, wall = clock() - start, time.perf_counter() - wall
    L.Trainer.__init__ = init

    total = {name: sum(times) for name, times in profiler.recorded_durations.items()}
    forward, backward = total.get(TRAINING_STEP, 0.0), total.get(BACKWARD, 0.0)
    parts = {
        "load training batches": total.get(LOADING, 0.0),
        "forward + loss": forward,
        "backward": backward,
        "optimiser (AdamW, clipping, zero_grad)": total.get(OPTIMIZER_STEP, 0.0) - forward - backward,
        "validation, sanity check included (batches, forward, metrics, maps)": sum(
            total.get(k, 0.0) for k in VALIDATION
        )
        + total.get(VALIDATION_END, 0.0),
    }
    parts["rest (start-up, logging, checkpoints, callbacks)"] = fit_s - sum(parts.values())
    stats = io.StringIO()
    pstats.Stats(cprofile, stream=stats).sort_stats("tottime").print_stats(40)
    (args.out / "cprofile.txt").write_text(stats.getvalue())
    result = {
        "clock": args.clock,
        "torch_threads": torch.get_num_threads(),
        "overrides": {k: v for k, v in overrides.items() if not k.endswith("_json")},
        "data_setup_s": round(setup_s, 1),
        "fit_s": round(fit_s, 1),
        "fit_wall_s": round(wall, 1),
        "steps": summary["global_step"],
        "parts_s": {k: round(v, 1) for k, v in parts.items()},
        "shares_of_fit": {k: round(v / fit_s, 3) for k, v in parts.items()},
    }
    (args.out / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
