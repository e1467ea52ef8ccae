"""
twistd plugin for twisted_udpsuite: C{twistd -n udpsuite [SUBCOMMAND] ...}.

Kept to one line of work so that building Twisted's dropin.cache never imports
the suite itself; L{twisted_udpsuite.tap} is loaded only when the plugin runs.
"""

from twisted.application.service import ServiceMaker

udpsuite = ServiceMaker(  # type: ignore[no-untyped-call]
    "twisted_udpsuite",
    "twisted_udpsuite.tap",
    "UDP/TCP small-network suite: echo, chat room, discovery, TFTP, file serving.",
    "udpsuite",
)
