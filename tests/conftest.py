"""Fixtures shared by every test: the global reactor (integration tests only)."""

from __future__ import annotations

import os
import shutil

import pytest


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
