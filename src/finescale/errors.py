"""User-facing errors: the CLI prints their message as one line and exits non-zero, without a traceback."""


class FinescaleError(Exception):
    """An error caused by the user's input (bad data, bad flag, missing file), not by a bug."""


class EmptyManifestError(FinescaleError):
    """A manifest had no valid record left after validation."""


class ImageReadError(FinescaleError):
    """An image file could not be read or decoded."""
