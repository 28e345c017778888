"""``finescale length train|eval|predict``."""

from finescale.cli_pipeline import pipeline_app
from finescale.pipelines.length.config import LengthConfig

SUMMARY = "Implant length from a radiograph: multi-scale features, end crops, smooth-label bins + regression."

app = pipeline_app("length", LengthConfig, SUMMARY)
