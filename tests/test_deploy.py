"""
The example systemd units in C{twisted_udpsuite/deploy/}: valid for systemd, installed
with the package, and each socket taken by the service its unit starts.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sysconfig
from pathlib import Path
from socket import AF_INET6
from typing import Any

import pytest
import pytest_twisted

from tests.process import runProcess, venvScript
from twisted_udpsuite import activation, tap
from twisted_udpsuite.activation import InheritedSocket
from twisted_udpsuite.testing import MemoryNetwork

DEPLOY = Path(__file__).resolve().parent.parent / "twisted_udpsuite" / "deploy"
UNITS = sorted(p.name for p in DEPLOY.iterdir())
PAIRS = sorted(p.stem for p in DEPLOY.glob("*.socket"))
TWISTD = "/usr/local/bin/twistd"


def _settings(path: Path) -> list[tuple[str, str]]:
    return [
        (key.strip(), value.strip())
        for key, sep, value in (line.partition("=") for line in path.read_text().splitlines())
        if sep and not key.startswith("#")
    ]


def test_everyServiceHasAPair() -> None:
    """A socket and a service unit for each service, and for all of them in one process."""
    assert PAIRS == sorted(["udpsuite"] + [f"udpsuite-{s.name}" for s in tap.SERVICES])
    assert UNITS == sorted([f"{p}.socket" for p in PAIRS] + [f"{p}.service" for p in PAIRS])


def test_installedWithThePackage() -> None:
    """The units are package data: the suite installed in the test venv has them."""
    installed = Path(sysconfig.get_paths()["purelib"]) / "twisted_udpsuite" / "deploy"
    assert sorted(p.name for p in installed.iterdir()) == UNITS


@pytest_twisted.ensureDeferred
async def test_systemdAnalyzeVerify(reactor: Any, tmp_path: Path) -> None:
    """
    C{systemd-analyze verify} accepts every unit, without a warning (with twistd's path
    made this venv's, as an installation adjusts C{ExecStart=}).
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is not installed (bash .ci/install-peers installs it)")
        pytest.skip("systemd-analyze is not installed")
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        assert TWISTD in text or name.endswith(".socket")
        (tmp_path / name).write_text(text.replace(TWISTD, venvScript("twistd")))
    out, err, code = await runProcess(
        reactor, [analyze, "verify", "--man=no", *UNITS], path=str(tmp_path)
    )
    assert (code, err) == (0, b""), err


@pytest.mark.parametrize("pair", PAIRS)
def test_socketsGoToTheirService(pair: str, tmp_path: Path) -> None:
    """
    Every socket of a pair's socket unit is taken by the services of its ExecStart=: by
    name (FileDescriptorName=), or by type and port where it has none.
    """
    settings = _settings(DEPLOY / f"{pair}.service")
    argv = shlex.split(dict(settings)["ExecStart"])
    assert argv[0] == TWISTD and "--nodaemon" in argv
    args = argv[argv.index("udpsuite") + 1 :]
    if "--root" in args:
        args[args.index("--root") + 1] = str(tmp_path)
    options = tap.Options()
    options.parseOptions(args)
    host = MemoryNetwork().addHost("192.0.2.1/24")
    listeners = [x for child in tap.makeService(options, host) for x in child.listeners]

    unit = _settings(DEPLOY / f"{pair}.socket")
    name = dict(unit).get("FileDescriptorName", f"{pair}.socket")  # systemd's default name
    listens = [(k, int(v)) for k, v in unit if k in ("ListenDatagram", "ListenStream")]
    passed = [
        InheritedSocket(fd, name, AF_INET6, "udp" if k == "ListenDatagram" else "tcp", "::", port)
        for fd, (k, port) in enumerate(listens, start=activation.FIRST_FD)
    ]
    assert passed
    activation.assign(passed, listeners)
    assert sorted(x.inherited for x in listeners if x.inherited is not None) == [
        s.fd for s in passed
    ]
