"""The ``ct`` entry of the pipeline table."""

from finescale.pipelines import Pipeline, manifest_images
from finescale.pipelines.ct.bench import METRICS, bench_combined, bench_eval_options, bench_variants
from finescale.pipelines.ct.config import CTConfig, upgrade_checkpoint_config
from finescale.pipelines.ct.histogram_baseline import histogram_baseline
from finescale.pipelines.ct.predict import CTPredictor
from finescale.pipelines.ct.task import CTTask
from finescale.pipelines.ct.workflow import evaluate, train
from finescale.synth.ct import generate_ct


def example_inputs(manifest, n: int = 3):
    return manifest_images(manifest, n, key="volume")


PIPELINE = Pipeline(
    name="ct",
    config_class=CTConfig,
    task_class=CTTask,
    predictor_class=CTPredictor,
    train=train,
    evaluate=evaluate,
    synth=generate_ct,
    bench_variants=bench_variants,
    bench_metrics=METRICS,
    bench_eval_options=bench_eval_options,
    bench_combined=bench_combined,
    extra_baselines=histogram_baseline,
    upgrade_config=upgrade_checkpoint_config,
    example_inputs=example_inputs,
    smoke={"epochs": 1, "batch_size": 4, "slices_per_volume": 4, "image_size": 48, "progressive_sizes": [32, 48]},
    smoke_n=24,
    demo_size=120,  # phantoms: about 70 training volumes, a few minutes on 2 cores
    # half the quick preset's 16 epochs (the bench's first budget), so that all five pipelines' demo fits 20 minutes
    # on the slowest 2-core machine measured; the demo's 15 test volumes say little about the model either way
    demo_overrides={"epochs": 8},
)
