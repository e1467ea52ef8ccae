"""The JSON logger for C{twistd --logger} (issue #11 §5), without twistd."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from twisted.logger import Logger, LogPublisher

from twisted_udpsuite.logs import JSONLogObserver, jsonLogger, twistdLogfile


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-n", "udpsuite", "tftp"], None),
        (["-n", "--logfile", "/var/log/x.json", "udpsuite"], "/var/log/x.json"),
        (["--logfile=/tmp/a", "-n", "udpsuite"], "/tmp/a"),
        (["-l", "/tmp/b", "udpsuite"], "/tmp/b"),
        (["-l/tmp/c", "udpsuite"], "/tmp/c"),
        (["-n", "--logfile", "-", "udpsuite"], "-"),
        # After the subcommand, options are the service's, not twistd's.
        (["-n", "udpsuite", "files", "--logfile", "/tmp/d"], None),
    ],
)
def test_twistdLogfile(argv: list[str], expected: str | None) -> None:
    """twistd's own --logfile/-l, in every spelling, before the subcommand only."""
    assert twistdLogfile(argv) == expected


def test_oneLinePerEvent() -> None:
    """
    Each event with text is one JSON line carrying its fields and its text; a
    field-only event (a signal for the metrics) writes nothing.
    """
    out = io.StringIO()
    publisher = LogPublisher(JSONLogObserver(out))
    log = Logger(namespace="test", observer=publisher)
    log.info(
        "GET {file!r} from {peer}: {outcome}",
        file="a b",
        peer="127.0.0.1:5",
        outcome="ok",
        bytes=3,
        duration=0.5,
        service="files",
    )
    log.debug(tftpTransferStarted=True, direction="RRQ")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["text"] == "GET 'a b' from 127.0.0.1:5: ok"
    expected = {"service": "files", "file": "a b", "bytes": 3, "duration": 0.5, "outcome": "ok"}
    assert {k: record[k] for k in expected} == expected


def test_failuresKept() -> None:
    """An error's record has its traceback in the text."""
    out = io.StringIO()
    log = Logger(namespace="test", observer=LogPublisher(JSONLogObserver(out)))
    try:
        int("seven")
    except ValueError:
        log.failure("parsing")
    [line] = out.getvalue().splitlines()
    text = json.loads(line)["text"]
    assert text.startswith("parsing\n") and "ValueError" in text


def test_jsonLoggerTargets(tmp_path: Any, capsys: Any) -> None:
    """Without --logfile (or with -) the records go to stdout; with one, to that file."""
    observer = jsonLogger(["-n", "udpsuite"])
    Logger(namespace="t", observer=LogPublisher(observer)).info("to stdout {x}", x=1)
    assert json.loads(capsys.readouterr().out)["x"] == 1
    path = tmp_path / "log.json"
    observer = jsonLogger(["--logfile", str(path), "udpsuite"])
    Logger(namespace="t", observer=LogPublisher(observer)).info("to a file {x}", x=2)
    assert json.loads(path.read_text())["x"] == 2
