"""
A one-line terminal progress bar (bytes, percentage, rate, ETA) for file transfers.

Shared by the TFTP and TCP file clients. It redraws at most every C{interval} seconds of the
clock it is given, so a fast transfer does not spend its time printing, and it works with or
without a known total (TFTP learns the size only if the server answers C{tsize}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressBar", "formatBytes", "formatDuration"]


def formatBytes(count: float) -> str:
    """C{1536} → C{"1.5 KiB"}: binary units, three significant figures."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def formatDuration(seconds: float) -> str:
    """C{75} → C{"1:15"}, C{3700} → C{"1:01:40"}."""
    whole = max(0, int(seconds + 0.5))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


class ProgressBar:
    """
    Draws the progress of a transfer on one terminal line, as::

        label [#####.....]  42% 1.2 MiB/2.9 MiB 3.4 MiB/s ETA 0:01

    @param out: The terminal (only write and flush are used).
    @param clock: Returns the current time in seconds (a reactor's C{seconds}).
    @param total: The size in bytes if known; it can be set later with L{setTotal}.
    @param width: The whole line's width in characters.
    @param interval: Smallest time between redraws; L{finish} always draws.
    """

    def __init__(
        self,
        out: TextIO,
        clock: Callable[[], float],
        label: str = "",
        total: int | None = None,
        width: int = 79,
        interval: float = 0.1,
    ) -> None:
        self._out = out
        self._clock = clock
        self.label = label
        self.total = total
        self._width = width
        self._interval = interval
        self._start = clock()
        self._lastDraw: float | None = None
        self._lastLength = 0
        self.done = 0
        self.finished = False

    def setTotal(self, total: int | None) -> None:
        """The size became known (or turned out unknown)."""
        self.total = total

    def update(self, done: int) -> None:
        """C{done} bytes moved so far; redraws if the last draw is old enough."""
        self.done = done
        now = self._clock()
        if self._lastDraw is None or now - self._lastDraw >= self._interval:
            self._draw(now)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self.finished:
            return
        self.finished = True
        self._draw(self._clock())
        self._out.write("\n")
        self._out.flush()

    def clear(self) -> None:
        """Erase the bar (before printing an error, say)."""
        if self._lastLength and not self.finished:
            self._out.write("\r" + " " * self._lastLength + "\r")
            self._out.flush()
        self.finished = True

    def render(self, now: float) -> str:
        """The line for the current state at time C{now}, without drawing it."""
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        total = self.total
        if total:
            fraction = min(1.0, self.done / total)
            amount = f"{formatBytes(self.done)}/{formatBytes(total)}"
            if self.finished:
                eta = f"in {formatDuration(elapsed)}"
            elif rate > 0:
                eta = "ETA " + formatDuration(max(0, total - self.done) / rate)
            else:
                eta = "ETA --:--"
            tail = f" {fraction:4.0%} {amount} {formatBytes(rate)}/s {eta}"
        else:
            fraction = None
            tail = f" {formatBytes(self.done)} {formatBytes(rate)}/s {formatDuration(elapsed)}"
        head = f"{self.label} " if self.label else ""
        room = self._width - len(head) - len(tail) - 2
        if fraction is not None and room >= 10:
            filled = int(room * fraction)
            bar = "[" + "#" * filled + "." * (room - filled) + "]"
        elif room >= 10:
            bar = "[" + " " * room + "]"
        else:
            bar = ""
        return (head + bar + tail)[: self._width]

    def _draw(self, now: float) -> None:
        self._lastDraw = now
        line = self.render(now)
        padding = " " * max(0, self._lastLength - len(line))
        self._lastLength = len(line)
        self._out.write("\r" + line + padding)
        self._out.flush()
