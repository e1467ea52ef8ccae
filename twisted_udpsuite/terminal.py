"""
Showing bytes from the network on a terminal without letting them drive it.

A peer's text may carry escape sequences that move the cursor, clear the
screen, retitle the window or worse.  L{printable} decodes and neutralises
them so that what reaches the terminal is only visible text.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

_C0_SHOWN = {"\t": "\t"}


def printable(data: bytes, encoding: str = "utf-8") -> str:
    """
    C{data} decoded with C{encoding} and made safe to print.

    Undecodable bytes become C{\\xNN}; control characters (C0, DEL, C1 —
    including ESC and CSI, which start every terminal escape sequence — and
    bidirectional overrides) become visible escapes such as C{\\x1b} or
    C{\\u202e}.  Tabs are kept; newlines are shown as C{\\n} so that one
    message is one line.
    """
    text = data.decode(encoding, errors="backslashreplace")
    out = []
    for ch in text:
        if ch in _C0_SHOWN:
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and ch != "\u200d":
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
