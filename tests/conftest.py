"""Fixtures shared by every test: the global reactor and a network namespace."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted


@pytest.fixture
def reactor():  # type: ignore[no-untyped-def]
    """The real reactor pytest-twisted runs; for integration tests only."""
    from twisted.internet import reactor

    return reactor


def requirePeer(name: str) -> str:
    """
    The path of an outside program used as a test peer.

    Missing, the test is skipped with the reason, except in CI (C{CI} set),
    where the project's set-up must have installed it and its absence fails.
    """
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        message = f"{name} is not installed (bash .ci/install-peers installs the test peers)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest_twisted.async_yield_fixture()
async def loopbackNamespace(reactor: Any) -> AsyncIterator[list[str]]:
    """
    A network namespace of the test's own with only a loopback (all of 127.0.0.0/8, ::1 and
    fd00::2): there a server may bind a wildcard address and be seen by no one. Yields the
    command prefix that runs a program inside it.
    """
    from tests.process import runProcess

    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ip = requirePeer("ip")
    name = f"udpsuite-local-{os.getpid()}"
    out, err, code = await runProcess(reactor, [ip, "netns", "add", name])
    if code != 0:
        pytest.skip(f"cannot create a network namespace: {err.decode(errors='replace')}")
    try:
        for argv in (
            [ip, "-n", name, "link", "set", "lo", "up"],
            [ip, "-n", name, "-6", "addr", "add", "fd00::2/128", "dev", "lo", "nodad"],
        ):
            out, err, code = await runProcess(reactor, argv)
            assert code == 0, err
        yield [ip, "netns", "exec", name]
    finally:
        await runProcess(reactor, [ip, "netns", "delete", name])
