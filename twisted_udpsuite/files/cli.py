"""
C{udpsuite fetch HOST[:PORT] REMOTE [LOCAL]} and C{udpsuite ls HOST[:PORT] [DIR]}.
"""

from __future__ import annotations

import datetime
import os
import posixpath
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.python import usage
from twisted.python.filepath import FilePath

from twisted_udpsuite import ports
from twisted_udpsuite.command import (
    INTERRUPTED,
    CommandError,
    CommandOptions,
    CommandSpec,
    Console,
    downloadPath,
    resolveHost,
    showAddress,
    targetOption,
)
from twisted_udpsuite.files import client
from twisted_udpsuite.progress import ProgressBar, formatBytes
from twisted_udpsuite.terminal import printable

__all__ = ["FETCH", "LS"]


class FetchOptions(CommandOptions):
    """Options of C{udpsuite fetch}."""

    synopsis = "HOST[:PORT] REMOTE [LOCAL]"
    longdesc = (
        f"Download REMOTE from a udpsuite file server (default port {ports.FILES}) to LOCAL "
        "(default: REMOTE's last path segment; a directory, which must exist if LOCAL ends "
        "in '/'; '-' for standard output). "
        "An interrupted download is kept as LOCAL.part and resumed by the next run "
        "(not with '-')."
    )
    optFlags = [
        ["quiet", "q", "No progress bar and no summary."],
        ["force", "f", "Overwrite LOCAL if it exists."],
    ]

    def parseArgs(
        self, target: str | None = None, remote: str | None = None, local: str | None = None
    ) -> None:
        if target is None or remote is None:
            raise usage.UsageError("fetch: missing HOST[:PORT] REMOTE")
        self["target"] = targetOption(target, ports.FILES)
        self["remote"] = remote
        if local != "-":
            local = downloadPath(remote, local, posixpath.basename(remote.rstrip("/")))
        self["local"] = local


async def _fetchToStandardOutput(
    reactor: Any, address: tuple[str, int], options: FetchOptions, console: Console
) -> int:
    """C{fetch HOST REMOTE -}: the bytes go to standard output as they come."""
    shown = f"fetch {printable(options['remote'].encode())} ({showAddress(*address)})"
    try:
        await client.fetchTo(reactor, address, options["remote"], console.binaryOutput())
    except CancelledError:
        raise CommandError(f"{shown}: interrupted; output incomplete", INTERRUPTED) from None
    except Exception as e:
        raise CommandError(f"{shown}: {e}") from None
    return 0


async def runFetch(reactor: Any, options: FetchOptions, console: Console) -> int:
    """Download one file; 0 on success, failures are L{CommandError}s."""
    host, port = options["target"]
    address = await resolveHost(reactor, host)
    if options["local"] == "-":
        return await _fetchToStandardOutput(reactor, (address, port), options, console)
    where = showAddress(address, port)
    remote: str = options["remote"]
    local = FilePath(os.path.abspath(options["local"]))
    if local.exists() and not options["force"]:
        raise CommandError(f"{options['local']}: already exists (use --force to overwrite)")
    showProgress = console.isTerminal and not options["quiet"]
    bar: ProgressBar | None = None
    if showProgress:
        bar = console.progressBar(reactor.seconds, printable(local.basename().encode())[:24])

    def progress(done: int, total: int | None) -> None:
        if bar is not None:
            if bar.total != total:
                bar.setTotal(total)
            bar.update(done)

    try:
        result = await client.fetch(reactor, (address, port), remote, local, progress=progress)
    except CancelledError:
        if bar is not None:
            bar.clear()
        kept = "nothing kept"
        if os.path.exists(local.path + ".part"):
            kept = f"partial kept as {options['local']}.part, run again to resume"
        shown = printable(remote.encode())
        raise CommandError(f"fetch {shown} ({where}): interrupted; {kept}", INTERRUPTED) from None
    except Exception as e:
        if bar is not None:
            bar.clear()
        kept = ""
        resumable = (client.TransferInterrupted, client.InsufficientSpace)
        if isinstance(e, resumable) and os.path.exists(local.path + ".part"):
            kept = f"; partial kept as {options['local']}.part, run again to resume"
        shown = printable(remote.encode())
        raise CommandError(f"fetch {shown} ({where}): {e}{kept}") from None
    if bar is not None:
        bar.finish()
    if showProgress:
        rate = result.received / result.duration if result.duration > 0 else 0.0
        resumed = f", resumed at {result.resumedFrom}" if result.resumedFrom else ""
        console.say(
            f"received {result.received} bytes in {result.duration:.2f} s "
            f"({formatBytes(rate)}/s{resumed}), sha256 {result.sha256}"
        )
    return 0


class LsOptions(CommandOptions):
    """Options of C{udpsuite ls}."""

    synopsis = "HOST[:PORT] [DIR]"
    longdesc = f"List a directory of a udpsuite file server (default port {ports.FILES})."

    def parseArgs(self, target: str | None = None, directory: str = "") -> None:
        if target is None:
            raise usage.UsageError("ls: missing HOST[:PORT]")
        self["target"] = targetOption(target, ports.FILES)
        self["directory"] = directory


async def runLs(reactor: Any, options: LsOptions, console: Console) -> int:
    """Print one line per entry: kind, size, mtime (UTC), name (escaped)."""
    host, port = options["target"]
    address = await resolveHost(reactor, host)
    try:
        entries = await client.listDirectory(reactor, (address, port), options["directory"])
    except CancelledError:
        raise
    except Exception as e:
        shown = printable(options["directory"].encode())
        raise CommandError(f"ls {shown!r} ({showAddress(address, port)}): {e}") from None
    for entry in entries:
        when = datetime.datetime.fromtimestamp(entry.mtime / 1e9, datetime.UTC)
        suffix = "/" if entry.kind == "dir" else ""
        console.say(
            f"{entry.kind:<5} {entry.size:>12} {when:%Y-%m-%d %H:%M} "
            f"{printable(entry.name.encode('utf-8', 'surrogateescape'))}{suffix}"
        )
    return 0


FETCH = CommandSpec("fetch", "Download a file from a udpsuite file server", FetchOptions, runFetch)
LS = CommandSpec("ls", "List a directory of a udpsuite file server", LsOptions, runLs)
