"""
C{udpsuite fetch HOST[:PORT] REMOTE [LOCAL]} and C{udpsuite ls HOST[:PORT] [DIR]}.

C{fetch --plain} speaks the tutorials' bare-name protocol (L{twisted_udpsuite.files.plain})
instead of ours: no resume and no digest, and an empty answer is a failure.
"""

from __future__ import annotations

import datetime
import os
import posixpath

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
from twisted_udpsuite.files import client, plain
from twisted_udpsuite.progress import ProgressBar, formatBytes
from twisted_udpsuite.reactors import IReactorNetwork
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
        "(not with '-'). "
        "With --plain, REMOTE is sent bare to a tutorial-style server (the socket tutorials' "
        f"file downloader protocol; default port {ports.FILES_PLAIN}, as for "
        "`twistd udpsuite files --plain-port`) and the answer read to the end: no resume, "
        "no digest; an empty answer (a missing or empty file) fails and writes nothing."
    )
    optFlags = [
        ["quiet", "q", "No progress bar and no summary."],
        ["force", "f", "Overwrite LOCAL if it exists."],
        ["plain", None, "Ask a plain (tutorial-style) server: send the bare name, read to EOF."],
    ]

    def parseArgs(
        self, target: str | None = None, remote: str | None = None, local: str | None = None
    ) -> None:
        if target is None or remote is None:
            raise usage.UsageError("fetch: missing HOST[:PORT] REMOTE")
        if self["plain"] and not remote:
            raise usage.UsageError("fetch --plain: REMOTE is empty")
        self["target"] = targetOption(target, ports.FILES_PLAIN if self["plain"] else ports.FILES)
        self["remote"] = remote
        if local != "-":
            local = downloadPath(remote, local, posixpath.basename(remote.rstrip("/")))
        self["local"] = local


async def _fetchToStandardOutput(
    reactor: IReactorNetwork, address: tuple[str, int], options: FetchOptions, console: Console
) -> int:
    """C{fetch HOST REMOTE -}: the bytes go to standard output as they come."""
    shown = f"fetch {printable(options['remote'].encode())} ({showAddress(*address)})"
    fetchTo = plain.fetchPlainTo if options["plain"] else client.fetchTo
    try:
        await fetchTo(reactor, address, options["remote"], console.binaryOutput())
    except CancelledError:
        raise CommandError(f"{shown}: interrupted; output incomplete", INTERRUPTED) from None
    except Exception as e:
        raise CommandError(f"{shown}: {e}") from None
    return 0


class _Progress:
    """The progress bar of a download to a file (on a terminal, unless --quiet)."""

    def __init__(
        self, reactor: IReactorNetwork, console: Console, local: FilePath[str], quiet: bool
    ) -> None:
        self.shown = console.isTerminal and not quiet
        self.bar: ProgressBar | None = None
        if self.shown:
            label = printable(local.basename().encode())[:24]
            self.bar = console.progressBar(reactor.seconds, label)

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is not None:
            if self.bar.total != total:
                self.bar.setTotal(total)
            self.bar.update(done)

    def clear(self) -> None:
        if self.bar is not None:
            self.bar.clear()

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.finish()


def _localFile(options: FetchOptions) -> FilePath[str]:
    """LOCAL as an absolute path, refused if it exists without --force."""
    local = FilePath(os.path.abspath(options["local"]))
    if local.exists() and not options["force"]:
        raise CommandError(f"{options['local']}: already exists (use --force to overwrite)")
    return local


async def runFetch(reactor: IReactorNetwork, options: FetchOptions, console: Console) -> int:
    """Download one file; 0 on success, failures are L{CommandError}s."""
    host, port = options["target"]
    address = await resolveHost(reactor, host)
    if options["local"] == "-":
        return await _fetchToStandardOutput(reactor, (address, port), options, console)
    if options["plain"]:
        return await _fetchPlain(reactor, (address, port), options, console)
    where = showAddress(address, port)
    remote: str = options["remote"]
    local = _localFile(options)
    progress = _Progress(reactor, console, local, options["quiet"])
    try:
        result = await client.fetch(reactor, (address, port), remote, local, progress=progress)
    except CancelledError:
        progress.clear()
        kept = "nothing kept"
        if os.path.exists(local.path + ".part"):
            kept = f"partial kept as {options['local']}.part, run again to resume"
        shown = printable(remote.encode())
        raise CommandError(f"fetch {shown} ({where}): interrupted; {kept}", INTERRUPTED) from None
    except Exception as e:
        progress.clear()
        kept = ""
        resumable = (client.TransferInterrupted, client.InsufficientSpace)
        if isinstance(e, resumable) and os.path.exists(local.path + ".part"):
            kept = f"; partial kept as {options['local']}.part, run again to resume"
        shown = printable(remote.encode())
        raise CommandError(f"fetch {shown} ({where}): {e}{kept}") from None
    progress.finish()
    if progress.shown:
        resumed = f", resumed at {result.resumedFrom}" if result.resumedFrom else ""
        console.say(
            f"{_received(result.received, result.duration)}{resumed}), sha256 {result.sha256}"
        )
    return 0


def _received(size: int, duration: float) -> str:
    """The summary's start: C{received N bytes in T s (R/s} (the caller closes it)."""
    rate = size / duration if duration > 0 else 0.0
    return f"received {size} bytes in {duration:.2f} s ({formatBytes(rate)}/s"


async def _fetchPlain(
    reactor: IReactorNetwork, address: tuple[str, int], options: FetchOptions, console: Console
) -> int:
    """C{fetch --plain HOST NAME LOCAL}: read to EOF into LOCAL, published whole or not at all."""
    shown = f"fetch {printable(options['remote'].encode())} ({showAddress(*address)})"
    local = _localFile(options)
    progress = _Progress(reactor, console, local, options["quiet"])
    try:
        result = await plain.fetchPlain(
            reactor,
            address,
            options["remote"],
            local,
            overwrite=options["force"],
            progress=progress,
        )
    except CancelledError:
        progress.clear()
        raise CommandError(f"{shown}: interrupted; nothing kept", INTERRUPTED) from None
    except Exception as e:
        progress.clear()
        raise CommandError(f"{shown}: {e}") from None
    progress.finish()
    if progress.shown:
        console.say(f"{_received(result.size, result.duration)})")
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


async def runLs(reactor: IReactorNetwork, options: LsOptions, console: Console) -> int:
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


FETCH = CommandSpec("fetch", FetchOptions, runFetch)
LS = CommandSpec("ls", LsOptions, runLs)
