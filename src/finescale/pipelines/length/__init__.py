"""``length``: implant length from a radiograph (seed 000): multi-scale backbone, collar/tip crops, feature fusion,
length-bin classification with Gaussian smooth labels and an auxiliary fine-length regression.

Kept import-light: the pipeline object lives in ``pipeline.py`` so that CLI help never imports torch."""
