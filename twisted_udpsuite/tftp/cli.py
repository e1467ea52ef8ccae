"""
C{udpsuite tftp get HOST[:PORT] REMOTE [LOCAL]} and C{udpsuite tftp put HOST[:PORT] LOCAL
[REMOTE]}: the TFTP client on the command line.
"""

from __future__ import annotations

import os
import posixpath
import sys
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage
from twisted.python.filepath import FilePath

from twisted_udpsuite import ports
from twisted_udpsuite.command import (
    INTERRUPTED,
    CommandError,
    CommandOptions,
    CommandSpec,
    Console,
    SuiteOptions,
    downloadPath,
    resolveHost,
    showAddress,
    targetOption,
)
from twisted_udpsuite.optionvalues import numberOption
from twisted_udpsuite.progress import ProgressBar, formatBytes
from twisted_udpsuite.reactors import IReactorNetwork
from twisted_udpsuite.tftp import client, errors
from twisted_udpsuite.tftp.options import (
    MAX_BLKSIZE,
    MAX_TIMEOUT,
    MAX_WINDOWSIZE,
    MIN_BLKSIZE,
    MIN_TIMEOUT,
    MIN_WINDOWSIZE,
)
from twisted_udpsuite.tftp.trace import IWireTracer, PcapWriter, TextTracer, TracerGroup

__all__ = ["COMMAND", "GetOptions", "IReactorNetwork", "Options", "PutOptions", "runTFTP"]


def _mode(value: str) -> str:
    mode = value.lower()
    if mode not in ("octet", "netascii"):
        raise usage.UsageError(f"--mode: {value!r} is not octet or netascii")
    return mode


class _TransferOptions(CommandOptions):
    optParameters = [
        [
            "blksize",
            "b",
            None,
            f"Block size to ask for ({MIN_BLKSIZE}-{MAX_BLKSIZE}; default 512 without asking).",
            numberOption("blksize", int, low=MIN_BLKSIZE, high=MAX_BLKSIZE),
        ],
        [
            "windowsize",
            "w",
            None,
            f"Blocks per window to ask for (RFC 7440, {MIN_WINDOWSIZE}-{MAX_WINDOWSIZE}).",
            numberOption("windowsize", int, low=MIN_WINDOWSIZE, high=MAX_WINDOWSIZE),
        ],
        [
            "timeout",
            "t",
            None,
            f"Retransmission timeout in seconds to ask for ({MIN_TIMEOUT}-{MAX_TIMEOUT}).",
            numberOption("timeout", int, low=MIN_TIMEOUT, high=MAX_TIMEOUT),
        ],
        ["mode", "m", "octet", "Transfer mode: octet or netascii.", _mode],
        [
            "retries",
            "r",
            5,
            "Times to resend an unanswered packet before giving up.",
            numberOption("retries", int, low=0, high=1000),
        ],
        ["pcap", None, None, "Write every datagram to this classic pcap file (tcpdump -r)."],
    ]
    optFlags = [
        ["quiet", "q", "No progress bar and no summary."],
        ["no-options", None, "Send a plain RFC 1350 request (no tsize or other options)."],
        ["trace", None, "Show every datagram on standard error: opcode, block, options, sizes."],
    ]


class GetOptions(_TransferOptions):
    """Options of C{udpsuite tftp get}."""

    synopsis = "HOST[:PORT] REMOTE [LOCAL]"
    longdesc = (
        f"Download REMOTE from a TFTP server (default port {ports.TFTP}) to LOCAL "
        "(default: REMOTE's last path segment; a directory, which must exist if LOCAL ends "
        "in '/'; '-' for standard output)."
    )

    def parseArgs(
        self, target: str | None = None, remote: str | None = None, local: str | None = None
    ) -> None:
        if target is None or remote is None:
            raise usage.UsageError("tftp get: missing HOST[:PORT] REMOTE")
        self["target"] = targetOption(target, ports.TFTP)
        self["remote"] = remote
        if local != "-":
            local = downloadPath(remote, local, posixpath.basename(remote.replace("\\", "/")))
        self["local"] = local


class PutOptions(_TransferOptions):
    """Options of C{udpsuite tftp put}."""

    synopsis = "HOST[:PORT] LOCAL [REMOTE]"
    longdesc = (
        f"Upload LOCAL ('-' for standard input) to a TFTP server (default port {ports.TFTP}) "
        "as REMOTE (default: LOCAL's file name)."
    )

    def parseArgs(
        self, target: str | None = None, local: str | None = None, remote: str | None = None
    ) -> None:
        if target is None or local is None:
            raise usage.UsageError("tftp put: missing HOST[:PORT] LOCAL")
        self["target"] = targetOption(target, ports.TFTP)
        self["local"] = local
        if remote is None:
            if local == "-":
                raise usage.UsageError("put from standard input needs REMOTE")
            remote = os.path.basename(local)
        self["remote"] = remote


class Options(SuiteOptions):
    """Options of C{udpsuite tftp}."""

    synopsis = "get|put ..."
    subCommands = [
        ["get", None, GetOptions, "Download a file"],
        ["put", None, PutOptions, "Upload a file"],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("tftp: say get or put")


_REASONS: list[tuple[type[errors.TFTPError], str]] = [
    (errors.FileNotFound, "file not found"),
    (errors.AccessViolation, "access violation"),
    (errors.DiskFull, "disk full or allocation exceeded"),
    (errors.FileExists, "file already exists"),
    (errors.OptionNegotiationRefused, "options refused"),
    (errors.TransferTimeout, "timed out"),
    (errors.ProtocolError, "protocol error"),
    (errors.IllegalOperation, "illegal operation"),
    (errors.UnknownTransferID, "unknown transfer ID"),
    (errors.NoSuchUser, "no such user"),
]


def describeError(error: BaseException) -> str:
    """One line for the user: what kind of failure, and the server's own words."""
    if isinstance(error, errors.TFTPError):
        reason = next(
            (text for cls, text in _REASONS if isinstance(error, cls)),
            f"server error {error.code}",
        )
        if error.message and error.message.lower() != reason:
            return f"{reason}: {error.message}"
        return reason
    if isinstance(error, OSError):
        return f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    return str(error) or error.__class__.__name__


def _tracer(reactor: IReactorTime, sub: usage.Options, console: Console) -> TracerGroup | None:
    """C{--trace} (lines on standard error) and C{--pcap FILE}, or None."""
    tracers: list[IWireTracer] = []
    if sub["trace"]:
        tracers.append(TextTracer(console.warn))
    if sub["pcap"] is not None:
        try:
            tracers.append(PcapWriter(open(sub["pcap"], "wb"), reactor))  # noqa: SIM115
        except OSError as e:
            raise CommandError(f"--pcap: {e.strerror}: {sub['pcap']}") from None
    return TracerGroup(tracers) if tracers else None


async def runTFTP(reactor: IReactorNetwork, options: Options, console: Console) -> int:
    """Run C{tftp get} or C{tftp put}; 0 on success, failures are L{CommandError}s."""
    sub = options.subOptions
    isGet = options.subCommand == "get"
    host, port = sub["target"]
    address = await resolveHost(reactor, host)
    where = showAddress(address, port)
    toStdout = isGet and sub["local"] == "-"
    showProgress = console.isTerminal and not sub["quiet"] and not toStdout
    bar: ProgressBar | None = None
    if showProgress:
        label = sub["remote"] if isGet else sub["local"]
        bar = console.progressBar(reactor.seconds, os.path.basename(label)[:24])

    def progress(done: int, total: int | None) -> None:
        if bar is not None:
            if total is not None and bar.total != total:
                bar.setTotal(total)
            bar.update(done)

    common: dict[str, Any] = {
        "mode": sub["mode"],
        "retries": sub["retries"],
        "progress": progress if bar is not None else None,
        "tracer": _tracer(reactor, sub, console),
    }
    if not sub["no-options"]:
        common.update(blksize=sub["blksize"], windowsize=sub["windowsize"])
        common["timeout"] = sub["timeout"]
    else:
        common["tsize"] = False
    remote = sub["remote"]
    local = sub["local"]
    verb = "get" if isGet else "put"
    try:
        if isGet:
            if local == "-":
                destination: client.DownloadTarget = console.binaryOutput()
            else:
                destination = FilePath(os.path.abspath(local))
            try:
                d: Deferred[client.TransferResult] = client.get(
                    reactor, (address, port), remote, destination, **common
                )
            except OSError as e:
                raise CommandError(f"get {remote}: cannot write {local}: {e.strerror}") from None
        else:
            if local == "-":
                source: client.UploadSource = sys.stdin.buffer
            else:
                if not os.path.isfile(local):
                    raise CommandError(f"put: {local}: not a readable file")
                source = FilePath(os.path.abspath(local))
            d = client.put(reactor, (address, port), source, remote, **common)
        result = await d
    except CommandError:
        raise
    except CancelledError:
        if bar is not None:
            bar.clear()
        if isGet:
            left = "output incomplete" if toStdout else f"nothing saved to {local}"
        else:
            left = "upload not stored"
        raise CommandError(
            f"{verb} {remote} ({where}): interrupted; transfer cancelled, {left}", INTERRUPTED
        ) from None
    except Exception as e:
        if bar is not None:
            bar.clear()
        raise CommandError(f"{verb} {remote} ({where}): {describeError(e)}") from None
    finally:
        if common["tracer"] is not None:
            common["tracer"].close()
    if bar is not None:
        bar.finish()
    if showProgress:
        rate = result.bytes / result.duration if result.duration > 0 else 0.0
        moved = "received" if isGet else "sent"
        extra = f", {result.retransmits} retransmits" if result.retransmits else ""
        console.say(
            f"{moved} {result.bytes} bytes in {result.duration:.2f} s "
            f"({formatBytes(rate)}/s, blksize {result.options.blksize}, "
            f"windowsize {result.options.windowsize}{extra})"
        )
    return 0


COMMAND = CommandSpec("tftp", Options, runTFTP)
