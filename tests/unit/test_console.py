import io
import logging
import sys

from rich.logging import RichHandler

from finescale.console import LOG_WIDTH, stderr_console

LONG_PATH = "/data/ct/" + "train_1/" * 15 + "train_1_a_1.nii.gz"  # 137 characters, past rich's 80-column default


def _logged(message: str) -> str:
    logger = logging.getLogger("finescale.test_console")
    handler = RichHandler(console=stderr_console(), show_path=False, show_time=False)
    logger.addHandler(handler)
    try:
        logger.warning(message)
    finally:
        logger.removeHandler(handler)
    return sys.stderr.getvalue()


def test_a_log_written_to_a_file_keeps_a_long_path_on_one_line(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal, like `2> train.log` or a cluster job's log
    assert stderr_console().width == LOG_WIDTH
    lines = _logged(f"skipped {LONG_PATH}").splitlines()
    assert len(lines) == 1 and lines[0].rstrip().endswith(LONG_PATH)


def test_columns_set_by_the_user_wins(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert stderr_console().width == 60
    assert len(_logged(f"skipped {LONG_PATH}").splitlines()) > 1
