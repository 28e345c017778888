"""The ``puzzle`` entry of the pipeline table."""

from finescale.pipelines import Pipeline
from finescale.pipelines.puzzle.bench import METRICS, bench_variants
from finescale.pipelines.puzzle.config import PuzzleConfig, upgrade_checkpoint_config
from finescale.pipelines.puzzle.predict import puzzle_predictor
from finescale.pipelines.puzzle.task import PuzzleTask
from finescale.pipelines.puzzle.workflow import classical_baseline, evaluate, example_inputs, train
from finescale.synth.puzzles import generate_puzzles

PIPELINE = Pipeline(
    name="puzzle",
    config_class=PuzzleConfig,
    task_class=PuzzleTask,
    predictor_class=puzzle_predictor,
    train=train,
    evaluate=evaluate,
    synth=generate_puzzles,
    bench_variants=bench_variants,
    bench_metrics=METRICS,
    extra_baselines=classical_baseline,
    example_inputs=example_inputs,
    smoke={
        "epochs": 1,
        "batch_size": 4,
        "fpn_channels": 16,
        "window": 128,
        "piece_window": 56,
        "piece_pixels": 48,
        "limit_train_batches": 4,
    },
    smoke_n=30,
    demo_size=600,
    demo_overrides={"epochs": 4},  # half the quick preset's 8, for the demo's 20 minutes (as ct's)
    upgrade_config=upgrade_checkpoint_config,
)
