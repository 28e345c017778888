"""``puzzle``: find a photographed jigsaw piece in the whole puzzle picture, with its rotation (seed 002)."""
