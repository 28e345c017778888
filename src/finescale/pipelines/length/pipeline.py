"""The ``length`` entry of the pipeline table."""

from finescale.pipelines import Pipeline, manifest_images
from finescale.pipelines.length.baselines import pixel_extent_baseline
from finescale.pipelines.length.bench import METRICS, bench_variants
from finescale.pipelines.length.config import LengthConfig
from finescale.pipelines.length.predict import LengthPredictor
from finescale.pipelines.length.task import LengthTask
from finescale.pipelines.length.workflow import evaluate, train
from finescale.synth.implants import generate_implants

PIPELINE = Pipeline(
    name="length",
    config_class=LengthConfig,
    task_class=LengthTask,
    predictor_class=LengthPredictor,
    train=train,
    evaluate=evaluate,
    synth=generate_implants,
    bench_variants=bench_variants,
    bench_metrics=METRICS,
    extra_baselines=pixel_extent_baseline,
    example_inputs=manifest_images,
    smoke={"scales": [32, 48], "crop_size": 32, "fusion_dim": 32, "batch_size": 8, "epochs": 1},
    demo_size=1500,  # about 1000 training images: the demo of all pipelines fits its 20 minutes
)
