# -*- test-case-name: tests.test_logs -*-
"""
Logs a machine can read: C{twistd --logger twisted_udpsuite.logs.jsonLogger ...}.

Every event becomes one line of JSON (Twisted's own L{eventAsJSON}, so
L{twisted.logger.eventsFromJSONLogFile} or C{jq} read it back). The events of an ended
transfer or session carry stable fields whatever the service: C{service}, C{peer},
C{file}, C{bytes}, C{duration} and C{outcome} (TFTP adds C{tftpTransfer}, C{direction},
C{retransmits}, C{reason}; the file server C{status} and C{filesRequest}). Each record
also has C{text}, what the text log shows for it (with the traceback of an error), and
Twisted's own C{log_format} and C{log_flattened}, to rebuild it.

twistd's C{--logger} takes precedence over C{--logfile} (its own rule), so this logger
honours C{--logfile PATH} itself: it writes there (a L{LogFile}, rotated like twistd's),
or to standard output without it or with C{--logfile -}. Events without text (signals
for structured observers such as the metrics, e.g. a TFTP transfer's start) are left
out, as the text log leaves them out: one record per ended transfer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, eventAsJSON, eventAsText
from twisted.python.logfile import LogFile
from zope.interface import implementer

__all__ = ["JSONLogObserver", "jsonLogger", "twistdLogfile"]

_PLUGIN = "udpsuite"


def twistdLogfile(argv: Sequence[str]) -> str | None:
    """
    The C{--logfile}/C{-l} given to twistd in C{argv} (before the C{udpsuite}
    subcommand), or C{None}.
    """
    found = None
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == _PLUGIN:
            break
        if arg in ("--logfile", "-l") and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith("--logfile="):
            found = arg.split("=", 1)[1]
        elif arg.startswith("-l") and not arg.startswith("--") and len(arg) > 2:
            found = arg[2:]
    return found


@implementer(ILogObserver)
class JSONLogObserver:
    """Writes each event that has text as one line of JSON to C{out}."""

    def __init__(self, out: IO[Any]) -> None:
        self._file = FileLogObserver(out, lambda event: eventAsJSON(event) + "\n")

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_format") is None and "log_failure" not in event:
            return
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        self._file({**event, "text": text})


def jsonLogger(argv: Sequence[str] | None = None) -> JSONLogObserver:
    """
    The C{twistd --logger} factory: JSON lines to twistd's C{--logfile}, or to stdout.

    @param argv: twistd's arguments (C{sys.argv} without the program name by default).
    """
    path = twistdLogfile(sys.argv[1:] if argv is None else argv)
    out: IO[Any] = sys.stdout if path in (None, "-") else LogFile.fromFullPath(path)  # type: ignore[no-untyped-call]
    return JSONLogObserver(out)
