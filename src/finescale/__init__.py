"""finescale: PyTorch pipelines for vision problems where the answer hides in fine detail."""

__version__ = "0.1.0"


def load(path):
    """Load a trained run (run directory or checkpoint file) and return its pipeline's predictor.

    ``finescale.load("runs/demo/length").predict("x.png")`` gives the dict that ``finescale <pipeline> predict``
    prints as one JSON line.
    """
    from finescale.engine.checkpoints import load_predictor

    return load_predictor(path)
