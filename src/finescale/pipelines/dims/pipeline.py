"""The ``dims`` entry of the pipeline table."""

from finescale.pipelines import Pipeline, manifest_images
from finescale.pipelines.dims.bench import METRICS, bench_shared, bench_variants
from finescale.pipelines.dims.config import DimsConfig
from finescale.pipelines.dims.predict import DimsPredictor
from finescale.pipelines.dims.search import SEARCH
from finescale.pipelines.dims.task import dims_task
from finescale.pipelines.dims.workflow import evaluate, train
from finescale.synth.implants import generate_implants

PIPELINE = Pipeline(
    name="dims",
    config_class=DimsConfig,
    task_class=dims_task,  # type: ignore[arg-type]  # a factory: the checkpoint's stage picks the task class
    predictor_class=DimsPredictor,
    train=train,
    evaluate=evaluate,
    synth=generate_implants,
    bench_variants=bench_variants,
    bench_metrics=METRICS,
    bench_shared=bench_shared,
    search=SEARCH,
    example_inputs=manifest_images,
    smoke={
        "image_size": 64,
        "embedding_dim": 16,
        "attention_dim": 16,
        "head_dim": 16,
        "mc_samples": 4,
        "batch_size": 8,
        "epochs": 1,
    },
    demo_size=600,  # three short trainings (two classifiers, the regressor) beside length's in the demo
)
