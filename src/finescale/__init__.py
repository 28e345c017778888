"""finescale: PyTorch pipelines for vision problems where the answer hides in fine detail."""

__version__ = "0.1.0"


def load(path, **options):
    """Load a trained run (run directory or checkpoint file) and return its pipeline's predictor.

    ``finescale.load("runs/demo/length").predict(["x.png", "scans/"])`` gives the list of dicts that
    ``finescale <pipeline> predict`` prints, one JSON line each; ``options`` are the predictor's (``batch_size``,
    ``num_workers``, ``device``, and a pipeline's own such as dims' ``mc_samples`` or puzzle's ``method``).
    """
    from finescale.engine.checkpoints import load_predictor

    return load_predictor(path, **options)
