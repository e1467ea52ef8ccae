"""
Discovery on one machine, with real processes: the responder of C{bash .ci/serve} is bound to
127.0.0.1 and so hears no broadcast; C{udpsuite discover} must find it all the same.

Broadcasts are sent only inside a network namespace the test creates (the
C{loopbackNamespace} fixture: a loopback and nothing else); on the host itself only
C{--to 127.0.0.1} runs, which probes that address alone (the in-memory tests in
C{test_cli} check that nothing is broadcast).
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.process import BackgroundProcess, runProcess, venvScript

pytestmark = pytest.mark.integration


async def discoverLoopbackResponder(reactor: Any, prefix: list[str], *options: str) -> Any:
    """
    Run C{udpsuite discover OPTIONS} (with C{prefix}, e.g. in a namespace) while a responder
    listens on 127.0.0.1, on a free port; return its (stdout, stderr, status) and the port.
    """
    responder = BackgroundProcess(
        reactor,
        [*prefix, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "responder",
         "--name", "solo", "--interface", "127.0.0.1", "--port", "0",
         "--service", "echo/udp:7007"],
    )  # fmt: skip
    try:
        match = await responder.waitFor(rb"responder 'solo' listening on 127\.0\.0\.1:(\d+)")
        port = match.group(1).decode()
        result = await runProcess(
            reactor,
            [*prefix, venvScript("udpsuite"), "discover", "--port", port, "--timeout", "2",
             "--max-delay", "0.2", *options],
        )  # fmt: skip
        return result, port
    finally:
        await responder.stop()


@pytest_twisted.ensureDeferred
async def test_defaultFindsTheLoopbackResponder(reactor: Any, loopbackNamespace: list[str]) -> None:
    """
    In a namespace of the test's own, plain C{udpsuite discover} (which broadcasts, there
    only) finds the responder bound to 127.0.0.1.
    """
    (out, err, code), port = await discoverLoopbackResponder(reactor, loopbackNamespace)
    assert code == 0, (out, err)
    assert out.decode().splitlines() == [f"127.0.0.1:{port}  solo  echo/udp:7007"]
    assert err.decode().endswith("1 responder found\n")


@pytest_twisted.ensureDeferred
async def test_toLoopbackOnTheHost(reactor: Any) -> None:
    """On the host itself, C{discover --to 127.0.0.1} finds the responder bound to loopback."""
    (out, err, code), port = await discoverLoopbackResponder(reactor, [], "--to", "127.0.0.1")
    assert code == 0, (out, err)
    assert out.decode().splitlines() == [f"127.0.0.1:{port}  solo  echo/udp:7007"]
