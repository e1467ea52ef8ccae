"""StreamHasher: the same digest inline (test clocks) and in its worker thread."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from tests.helpers import successResultOf
from twisted_udpsuite.files.hashing import StreamHasher


def test_inline(tmp_path: Any) -> None:
    """Without threads: a file prefix then chunks, the plain sha256 of both."""
    path = tmp_path / "f"
    path.write_bytes(b"prefix-and-more")
    hasher = StreamHasher(Clock(), lambda behind: None)
    hasher.updateFromFile(os.open(path, os.O_RDONLY), 6)
    hasher.update(b"tail")
    assert successResultOf(hasher.finish()) == hashlib.sha256(b"prefixtail").hexdigest()


def test_inlineShortFile(tmp_path: Any) -> None:
    """A file shorter than asked is an OSError."""
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    with pytest.raises(OSError):
        StreamHasher(Clock(), lambda behind: None).updateFromFile(os.open(path, os.O_RDONLY), 9)


@pytest_twisted.ensureDeferred
async def test_threaded(reactor: Any, tmp_path: Any) -> None:
    """In the worker thread: same digest; a backlog pauses then resumes the producer."""
    path = tmp_path / "f"
    prefix = os.urandom(3 << 20)
    path.write_bytes(prefix)
    calls: list[bool] = []
    hasher = StreamHasher(reactor, calls.append, high=1 << 20, low=1 << 19)
    hasher.updateFromFile(os.open(path, os.O_RDONLY), len(prefix))
    chunk = os.urandom(1 << 18)
    for _ in range(40):
        hasher.update(chunk)
    digest = await hasher.finish().addTimeout(10, reactor)
    assert digest == hashlib.sha256(prefix + chunk * 40).hexdigest()
    assert calls[:1] == [True] and calls[-1] is False


@pytest_twisted.ensureDeferred
async def test_threadedError(reactor: Any, tmp_path: Any) -> None:
    """A failing file job in the worker fails finish() instead of hanging it."""
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    hasher = StreamHasher(reactor, lambda behind: None)
    hasher.updateFromFile(os.open(path, os.O_RDONLY), 100)
    hasher.update(b"x")
    d = hasher.finish()
    with pytest.raises(OSError):
        await d.addTimeout(10, reactor)


def test_rangeInline(tmp_path: Any) -> None:
    """A file range from an offset, between chunks, inline."""
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    hasher = StreamHasher(Clock(), lambda behind: None)
    hasher.update(b"a")
    hasher.updateFromRange(os.open(path, os.O_RDONLY), 3, 4)
    hasher.update(b"z")
    assert successResultOf(hasher.finish()) == hashlib.sha256(b"a3456z").hexdigest()


@pytest_twisted.ensureDeferred
async def test_rangeThreadedBacklog(reactor: Any, tmp_path: Any) -> None:
    """
    Ranges count in their own backlog (pause, then resume), not in the in-memory one,
    and hash in order in the worker.
    """
    path = tmp_path / "f"
    data = os.urandom(6 << 20)
    path.write_bytes(data)
    calls: list[bool] = []
    hasher = StreamHasher(reactor, calls.append, high=1 << 30, rangeHigh=1 << 20)
    for offset in range(0, len(data), 3 << 19):
        hasher.updateFromRange(os.open(path, os.O_RDONLY), offset, 3 << 19)
    digest = await hasher.finish().addTimeout(10, reactor)
    assert digest == hashlib.sha256(data).hexdigest()
    assert calls[:1] == [True] and calls[-1] is False


def test_rangesDoNotFillTheMemoryBacklog(tmp_path: Any) -> None:
    """Queued file ranges alone never pause the producer below their own budget."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    calls: list[bool] = []

    class Threaded:  # callFromThread: a real worker thread, whose callbacks are dropped
        def callFromThread(self, f: Any, *args: Any) -> None:
            pass

    hasher = StreamHasher(Threaded(), calls.append, high=10, rangeHigh=1000)
    for _ in range(9):
        hasher.updateFromRange(os.open(path, os.O_RDONLY), 0, 100)
    assert calls == []
    hasher.updateFromRange(os.open(path, os.O_RDONLY), 0, 100)
    hasher.update(b"y" * 11)
    assert calls == [True]
    hasher.abandon()
