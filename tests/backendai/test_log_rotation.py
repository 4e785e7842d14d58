"""The embedded stack keeps its log files bounded (backendai.stack.LogRotation), and the access log's
handler follows a file moved away by any rotation (logrotate included)."""
from __future__ import annotations

import logging
import logging.handlers
import os
import subprocess
import sys
import threading
from pathlib import Path

from backendai.stack import LogRotation, build_parser

ROOT = Path(__file__).resolve().parents[2]


def rotation(tmp_path, reopens=(), appends=(), max_bytes=10, keep=3):
    return LogRotation(threading.Event(), list(reopens), list(appends), max_bytes=max_bytes, keep=keep)


def test_it_leaves_a_file_under_the_limit_alone(tmp_path):
    log = tmp_path / "requests.log"
    log.write_text("short\n")
    assert rotation(tmp_path, reopens=[log]).rotate(log, copy=False) is False
    assert log.read_text() == "short\n"
    assert not (tmp_path / "requests.log.1").exists()


def test_it_renames_a_file_past_the_limit_and_shifts_the_older_ones(tmp_path):
    log = tmp_path / "requests.log"
    for index, text in ((1, "one"), (2, "two"), (3, "three")):
        (tmp_path / f"requests.log.{index}").write_text(text)
    log.write_text("x" * 20)
    rotation(tmp_path, reopens=[log], keep=3).check()
    assert not log.exists()
    assert (tmp_path / "requests.log.1").read_text() == "x" * 20
    assert (tmp_path / "requests.log.2").read_text() == "one"
    assert (tmp_path / "requests.log.3").read_text() == "two"  # the oldest ("three") is gone
    assert not (tmp_path / "requests.log.4").exists()


def test_it_copies_then_truncates_a_file_its_writer_keeps_open(tmp_path):
    log = tmp_path / "access.log"
    writer = open(log, "a", buffering=1)  # like daphne's --access-log
    try:
        writer.write("y" * 20 + "\n")
        rotation(tmp_path, appends=[log]).check()
        writer.write("after\n")
    finally:
        writer.close()
    assert (tmp_path / "access.log.1").read_text() == "y" * 20 + "\n"
    assert log.read_text() == "after\n"  # append mode: the writer goes on at the start


def test_it_survives_a_missing_file(tmp_path):
    rotation(tmp_path, reopens=[tmp_path / "absent.log"], appends=[tmp_path / "gone.log"]).check()


def test_the_access_log_handler_reopens_a_rotated_file(tmp_path):
    path = tmp_path / "requests.log"
    handler = logging.handlers.WatchedFileHandler(path, delay=True)
    logger = logging.getLogger("test.rotation")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    try:
        logger.info("before")
        rotation(tmp_path, reopens=[path], max_bytes=1).check()
        logger.info("after")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert (tmp_path / "requests.log.1").read_text() == "before\n"
    assert path.read_text() == "after\n"


def test_the_settings_write_the_access_log_through_a_handler_that_follows_rotation(tmp_path):
    code = ("import backendai.settings as s; h = s.LOGGING['handlers']['access_file']; "
            "print(h['class'], h['filename'])")
    env = dict(os.environ, ACCESS_LOG_FILE=str(tmp_path / "requests.log"), BACKEND_DATA_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["logging.handlers.WatchedFileHandler", str(tmp_path / "requests.log")]


def test_it_refuses_log_limits_out_of_range():
    import pytest

    from backendai import stack

    for argv in (["--log-max-mb", "0"], ["--log-keep", "0"], ["--log-keep", "5000"]):
        with pytest.raises(SystemExit):
            stack.main(argv)
    args = build_parser().parse_args([])
    assert (args.log_max_mb, args.log_keep) == (64, 5)
