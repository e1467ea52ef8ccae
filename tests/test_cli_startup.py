"""
What a C{udpsuite} command loads as it starts (issue #13: the start-up of C{udpsuite tftp get}
is part of every timed transfer): only the chosen command's module, checked in fresh
processes of the installed program, against real servers on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.process import runProcess
from tests.tftp.fakeserver import FakeServer
from twisted_udpsuite import cli

pytestmark = pytest.mark.integration

#: Runs C{udpsuite ARGS} (L{cli.run}, as the console script does), then writes the names
#: of the modules it loaded (not those marked missing) to the file named by its first argument.
_REPORTING_UDPSUITE = """
import json, sys
report = sys.argv.pop(1)
from twisted_udpsuite.cli import run
try:
    run()
finally:
    with open(report, "w") as f:
        json.dump(sorted(m for m, module in sys.modules.items() if module is not None), f)
"""


async def runReporting(
    reactor: Any, tmp_path: Path, argv: list[str]
) -> tuple[bytes, int, set[str]]:
    """Run C{udpsuite ARGV} in a fresh process: its stdout, its exit status, its modules."""
    report = tmp_path / "modules.json"
    out, err, code = await runProcess(
        reactor,
        [sys.executable, "-c", _REPORTING_UDPSUITE, str(report), *argv],
        path=str(tmp_path),  # the installed suite, not a source tree in the working directory
        timeout=30,
    )
    assert b"Traceback" not in err, err
    return out, code, set(json.loads(report.read_text()))


def tlsModules(modules: set[str]) -> set[str]:
    """pyOpenSSL's and cryptography's modules: no command speaks TLS, none loads them."""
    return {m for m in modules if m.partition(".")[0] in ("OpenSSL", "cryptography")}


def othersCode(chosen: str | None, modules: set[str]) -> set[str]:
    """
    Those of C{modules} that belong to a command other than C{chosen} (by name): its module,
    or anything in its protocol's package (C{twisted_udpsuite.sendcli} has no package).
    """
    owners = {c.module for c in cli.COMMANDS} | {
        c.module.rpartition(".")[0] for c in cli.COMMANDS if c.module.count(".") > 1
    }
    for c in cli.COMMANDS:
        if c.name == chosen:
            owners -= {c.module, c.module.rpartition(".")[0]}
    return {m for m in modules if any(m == o or m.startswith(o + ".") for o in owners)}


def test_othersCode() -> None:
    """What a tftp command must not load: every other protocol's code (the check's own check)."""
    modules = {
        "twisted_udpsuite.tftp",
        "twisted_udpsuite.tftp.cli",
        "twisted_udpsuite.command",
        "twisted_udpsuite.sendcli",
        "twisted_udpsuite.chat",
        "twisted_udpsuite.echo.client",
        "twisted_udpsuite.discovery.interfaces",
    }
    assert othersCode("tftp", modules) == {
        "twisted_udpsuite.sendcli",
        "twisted_udpsuite.chat",
        "twisted_udpsuite.echo.client",
        "twisted_udpsuite.discovery.interfaces",
    }
    assert othersCode("chat", modules) == {
        "twisted_udpsuite.sendcli",
        "twisted_udpsuite.tftp",
        "twisted_udpsuite.tftp.cli",
        "twisted_udpsuite.echo.client",
        "twisted_udpsuite.discovery.interfaces",
    }


@pytest_twisted.ensureDeferred
async def test_tftpGetLoadsNoOtherCommand(reactor: Any, tmp_path: Path) -> None:
    """
    A real C{udpsuite tftp get} downloads its file, and loads no other command's code, no
    TLS stack, and no server code (twistd's application framework, the TFTP server's HTTP).
    """
    data = b"x" * 3000
    server = FakeServer(reactor, {b"f.bin": data})
    port = reactor.listenUDP(0, server, interface="127.0.0.1")
    try:
        target = f"127.0.0.1:{port.getHost().port}"
        _, code, modules = await runReporting(
            reactor, tmp_path, ["tftp", "get", "-q", target, "f.bin", "got.bin"]
        )
    finally:
        await port.stopListening()
    assert code == 0
    assert (tmp_path / "got.bin").read_bytes() == data
    assert "twisted_udpsuite.tftp.cli" in modules
    assert othersCode("tftp", modules) == set()
    assert tlsModules(modules) == set()
    server = {"twisted_udpsuite.service", "twisted.application.service", "twisted.web.http"}
    assert modules & server == set()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("command", [c.name for c in cli.COMMANDS])
async def test_eachCommandLoadsOnlyItsOwn(reactor: Any, tmp_path: Path, command: str) -> None:
    """
    C{udpsuite COMMAND --help} loads that command's module and no other command's (a
    protocol's own code may use another's: chat's C{/discover}, IPMsg's broadcast addresses),
    and no TLS stack (L{twisted_udpsuite.twistedprivate.withoutTLS}).
    """
    [entry] = [c for c in cli.COMMANDS if c.name == command]
    out, code, modules = await runReporting(reactor, tmp_path, [command, "--help"])
    assert code == 0
    assert out.startswith(f"Usage: udpsuite {command} ".encode()), out
    assert entry.module in modules
    assert {c.module for c in cli.COMMANDS if c.module != entry.module} & modules == set()
    assert tlsModules(modules) == set()


@pytest_twisted.ensureDeferred
async def test_helpListsEveryCommandAndLoadsNone(reactor: Any, tmp_path: Path) -> None:
    """C{udpsuite --help} lists every command with its description, from the list alone."""
    out, code, modules = await runReporting(reactor, tmp_path, ["--help"])
    assert code == 0
    shown = " ".join(out.decode().split())  # as Twisted wrapped it
    for command in cli.COMMANDS:
        assert f"{command.name} {command.description}" in shown, command.name
    assert othersCode(None, modules) == set()
