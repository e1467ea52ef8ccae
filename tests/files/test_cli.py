"""C{udpsuite fetch} and C{udpsuite ls} in memory (MemoryReactorClock + iosim)."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from tests.files.test_client import STEP, Net
from tests.helpers import successResultOf
from twisted_udpsuite import cli
from twisted_udpsuite.command import Console


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def runCommand(
    root: Any, argv: list[str], terminal: bool = False, errTerminal: bool | None = None
) -> tuple[int, str, str]:
    """Run C{udpsuite ARGV} in memory; C{terminal}: stdout (and stderr) are TTYs."""
    net = Net(root)
    out = _Terminal() if terminal else io.StringIO()
    err = _Terminal() if (terminal if errTerminal is None else errTerminal) else io.StringIO()
    d = Deferred.fromCoroutine(cli.main(net.reactor, argv, Console(out, err)))
    for _ in range(10000):
        if d.called:
            break
        pump = net.completer.succeedOnce()
        if pump is not None:
            net.run(pump)
        net.reactor.advance(STEP)
    return successResultOf(d), out.getvalue(), err.getvalue()


@pytest.fixture
def root(tmp_path: Any) -> Any:
    served = tmp_path / "served"
    served.mkdir()
    (served / "a.bin").write_bytes(os.urandom(3 << 20))
    (served / "evil\x1b[2Jname").write_bytes(b"x")
    (served / "sub").mkdir()
    return served


def test_fetchWithProgress(root: Any, tmp_path: Any, monkeypatch: Any) -> None:
    """
    On a terminal: a progress bar on stderr and a summary on stdout; the file lands
    under REMOTE's basename.
    """
    monkeypatch.chdir(tmp_path)
    status, out, err = runCommand(root, ["fetch", "127.0.0.1:8000", "a.bin"], terminal=True)
    assert status == 0 and "100%" in err and "100%" not in out
    assert out.startswith("received 3145728 bytes") and "sha256" in out and out.count("\n") == 1
    assert (tmp_path / "a.bin").read_bytes() == (root / "a.bin").read_bytes()


def test_fetchProgressOnlyOnTerminalStderr(root: Any, tmp_path: Any) -> None:
    """stderr redirected (a log file): no bar drawn into it, the summary still shows."""
    argv = ["fetch", "127.0.0.1:8000", "a.bin", str(tmp_path / "a")]
    status, out, err = runCommand(root, argv, terminal=True, errTerminal=False)
    assert status == 0 and err == "" and out.startswith("received 3145728 bytes")


def test_fetchQuiet(root: Any, tmp_path: Any) -> None:
    """--quiet (or no terminal) prints nothing on success."""
    local = tmp_path / "x"
    status, out, err = runCommand(
        root, ["fetch", "-q", "127.0.0.1:8000", "a.bin", str(local)], terminal=True
    )
    assert (status, out, err) == (0, "", "")
    assert local.read_bytes() == (root / "a.bin").read_bytes()


def test_fetchIntoDirectory(root: Any, tmp_path: Any) -> None:
    """LOCAL naming a directory: the file goes inside it, under REMOTE's basename."""
    status, _, _ = runCommand(root, ["fetch", "127.0.0.1:8000", "/a.bin", str(tmp_path)])
    assert status == 0 and (tmp_path / "a.bin").exists()


def test_fetchErrors(root: Any, tmp_path: Any) -> None:
    """Failures are one line on stderr with status 1; usage errors status 2."""
    status, _, err = runCommand(root, ["fetch", "127.0.0.1:8000", "nope", str(tmp_path / "n")])
    assert status == 1 and "404" in err and err.count("\n") == 1
    status, _, err = runCommand(root, ["fetch", "127.0.0.1:8000", "sub", str(tmp_path / "n")])
    assert status == 1 and "409" in err
    status, _, err = runCommand(root, ["fetch", "127.0.0.1:8000"])
    assert status == 2 and "missing" in err
    status, _, err = runCommand(root, ["fetch", "127.0.0.1:8000", "/"])
    assert status == 2
    (tmp_path / "exists").write_bytes(b"keep")
    existing = str(tmp_path / "exists")
    status, _, err = runCommand(root, ["fetch", "127.0.0.1:8000", "a.bin", existing])
    assert status == 1 and "already exists" in err
    assert (tmp_path / "exists").read_bytes() == b"keep"


def test_ls(root: Any) -> None:
    """ls prints kind, size, date and an escaped name per entry."""
    status, out, err = runCommand(root, ["ls", "127.0.0.1:8000"])
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("file") and lines[0].endswith(" a.bin")
    assert "\x1b" not in out and "evil\\x1b[2Jname" in out
    assert lines[2].startswith("dir") and lines[2].endswith(" sub/")
    status, _, err = runCommand(root, ["ls", "127.0.0.1:8000", "a.bin"])
    assert status == 1 and "409" in err
