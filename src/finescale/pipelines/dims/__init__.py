"""``dims``: implant length and diameter from a radiograph (seed 001), helped by manufacturer (company) and
implant-model embeddings taken from two classifiers and fused with the visual feature by attention.

Kept import-light: the pipeline object lives in ``pipeline.py`` so that CLI help never imports torch."""
