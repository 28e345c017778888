"""``ct``: 18 chest-CT abnormalities per volume (seed 003, VLM3D task 2): CT-RATE-format volumes packed once into a
compressed store, 12 windowed slices per volume through a 2-D backbone with attention, slice-importance pooling and
the seed's enhanced classifier; ensembles, test-time augmentation and per-label calibration at VLM3D's fixed 0.5.

Kept import-light: the pipeline object lives in ``pipeline.py`` so that CLI help never imports torch."""
