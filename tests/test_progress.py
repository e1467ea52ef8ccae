"""Tests for the terminal progress bar."""

from __future__ import annotations

import io

from twisted.internet.task import Clock

from twisted_udpsuite.progress import ProgressBar, formatBytes, formatDuration


def test_formatBytes() -> None:
    assert formatBytes(0) == "0 B"
    assert formatBytes(1023) == "1023 B"
    assert formatBytes(1536) == "1.5 KiB"
    assert formatBytes(200 * 1024 * 1024) == "200 MiB"


def test_formatDuration() -> None:
    assert formatDuration(0) == "0:00"
    assert formatDuration(75) == "1:15"
    assert formatDuration(3700) == "1:01:40"


def test_knownTotal() -> None:
    """With a size: bar, percentage, rate and ETA."""
    clock = Clock()
    out = io.StringIO()
    bar = ProgressBar(out, clock.seconds, "file", total=4096, width=60)
    clock.advance(1)
    bar.update(1024)
    line = out.getvalue().split("\r")[-1]
    assert line.startswith("file [")
    assert " 25% 1.0 KiB/4.0 KiB 1.0 KiB/s ETA 0:03" in line
    assert len(line) <= 60
    clock.advance(3)
    bar.update(4096)
    bar.finish()
    assert out.getvalue().endswith("in 0:04\n")


def test_unknownTotal() -> None:
    """Without a size: bytes, rate and elapsed time."""
    clock = Clock()
    out = io.StringIO()
    bar = ProgressBar(out, clock.seconds, total=None)
    clock.advance(2)
    bar.update(2048)
    assert out.getvalue().rstrip().endswith("2.0 KiB 1.0 KiB/s 0:02")


def test_throttled() -> None:
    """Updates closer together than the interval do not redraw."""
    clock = Clock()
    out = io.StringIO()
    bar = ProgressBar(out, clock.seconds, total=100, interval=0.5)
    for i in range(10):
        bar.update(i)
    assert out.getvalue().count("\r") == 1
    clock.advance(0.5)
    bar.update(50)
    assert out.getvalue().count("\r") == 2


def test_clear() -> None:
    clock = Clock()
    out = io.StringIO()
    bar = ProgressBar(out, clock.seconds, total=100)
    bar.update(10)
    bar.clear()
    assert out.getvalue().endswith("\r")
    bar.finish()
    assert not out.getvalue().endswith("\n")
