"""
Default port numbers of the suite's services, in one place.

All are unprivileged so that C{twistd -n udpsuite} runs as any user.  The
UDP ones are also the echo service's deny list of source ports: a forged
datagram "from" one of our own services must not start a reply loop.
"""

ECHO = 7007
TFTP = 6969
CHATROOM = 9999
RESPONDER = 9998
FILES = 8000
#: The file server's plain (tutorial) protocol: off unless C{--plain-port} is given,
#: and C{udpsuite fetch --plain HOST} without a port asks here.
FILES_PLAIN = 8001
#: IP Messenger's fixed port (not ours to choose: every IPMsg client answers only to it).
IPMSG = 2425

#: The suite's own UDP service ports, and IPMsg's (a datagram echoed to an IPMsg
#: client would be read as an entry or a message from the echo service).
SUITE_UDP_PORTS = frozenset({ECHO, TFTP, CHATROOM, RESPONDER, IPMSG})
