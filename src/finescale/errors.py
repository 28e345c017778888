"""User-facing errors: the CLI prints their message as one line and exits non-zero, without a traceback."""


class FinescaleError(Exception):
    """An error caused by the user's input (bad data, bad flag, missing file), not by a bug."""


class EmptyManifestError(FinescaleError):
    """A manifest had no valid record left after validation."""


class ImageReadError(FinescaleError):
    """An image file could not be read or decoded."""


class Interrupted(Exception):
    """Training stopped by a signal: ``signal`` is ``"SIGINT"`` (Ctrl-C) or ``"SIGTERM"`` (a kill, a scheduler's
    time limit); ``checkpoint`` is the last.ckpt it left to ``--resume`` from, None when it stopped before one. The
    CLI ends with one line and the shell's status for that signal (130 or 143)."""

    def __init__(self, signal: str, checkpoint: object = None) -> None:
        self.signal = signal
        self.checkpoint = checkpoint
        self.exit_status = 143 if signal == "SIGTERM" else 130
        where = (
            f"{checkpoint} holds its progress: continue with --resume" if checkpoint else "before its first checkpoint"
        )
        super().__init__(f"training stopped by {signal}; {where}")
