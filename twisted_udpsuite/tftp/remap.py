# -*- test-case-name: tests.tftp.test_pxe_remap -*-
"""
Filename remapping with tftpd-hpa's rule files (C{in.tftpd -m FILE}), so that a file written
for it works here unchanged. Pure: no I/O besides L{RemapRules.fromPath}.

A rule file holds one rule per line: I{operation} I{regex} [I{replacement}], separated by
whitespace; C{#} starts a comment, and a backslash escapes whitespace or C{#}. The operation
is a combination of these letters (tftpd-hpa 5.2's set):

  - C{r}: replace the part of the name the regex matched by the replacement;
  - C{g}: with C{r}, repeat until the regex no longer matches;
  - C{i}: match case-insensitively;
  - C{e}: if the rule matches, stop processing after it;
  - C{s}: if the rule matches, start again from the first rule after it;
  - C{a}: if the rule matches, refuse the request (ERROR 2; the replacement, if any, is the
    message);
  - C{G} / C{P}: the rule applies to reads (RRQ) / writes (WRQ) only;
  - C{4} / C{6}: the rule applies to IPv4 / IPv6 clients only (a V4-mapped client is IPv4);
  - C{~}: the rule applies when the regex does I{not} match (never with C{r}).

Rules run from the top and, by default, all of them run. The regex is a POSIX extended
regular expression (C{egrep}, as tftpd-hpa compiles it with C{regcomp(REG_EXTENDED)}),
translated to Python's C{re}: bracket expressions with C{[:classes:]} and literal
backslashes, back-references, GNU's C{\\<}, C{\\>}, C{\\b}, C{\\w}... One difference stays: where
alternatives could match at the same place, POSIX takes the longest, Python the first
(C{(a|ab)} on C{ab}); write the longer alternative first. In a replacement, C{\\0} is the whole
match, C{\\1}..C{\\9} the groups, C{\\i} the client's address (C{192.0.2.169},
C{2001:db8::1}), C{\\x} the same in hexadecimal (C{C00002A9}), C{\\U}/C{\\L} turn what follows
to upper/lower case until C{\\E}, and a backslash before anything else is that character.

A loop (C{rg a aa}, or C{s} rules that keep matching) stops after L{MAX_STEPS} steps and
refuses the request, as tftpd-hpa does. The result is a name like any other: the backend
still confines it to its root (a leading C{/} is the root).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_STEPS", "RemapError", "RemapRefused", "RemapRule", "RemapRules"]

MAX_STEPS = 1024
"""Rule applications allowed for one name before it is refused (tftpd-hpa's deadman)."""

_FLAGS = frozenset("rgeasi~46GP")
_SPACE = " \t\n\v\f\r"
_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v",
    "blank": " \\t",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "print": " -~",
    "graph": "!-~",
    "cntrl": "\\x00-\\x1f\\x7f",
    "xdigit": "0-9A-Fa-f",
}
_GNU_ESCAPES = {
    "<": r"\b(?=\w)",
    ">": r"\b(?<=\w)",
    "b": r"\b",
    "B": r"\B",
    "w": r"\w",
    "W": r"\W",
    "s": r"\s",
    "S": r"\S",
    "`": r"\A",
    "'": r"\Z",
}
_INTERVAL = re.compile(r"\{(\d+)(,(\d*))?\}")


class RemapError(ValueError):
    """A rule file that cannot be used (tftpd-hpa refuses to start on it too)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


class RemapRefused(Exception):
    """The rules refuse this request (an C{a} rule matched, or they looped): ERROR 2."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message or "Access violation")
        self.message = message or "Access violation"


def _bracket(pattern: str, i: int, line: int) -> tuple[str, int]:
    """The POSIX bracket expression starting at C{pattern[i] == "["}, as Python's."""
    j = i + 1
    out = "["
    if j < len(pattern) and pattern[j] == "^":
        out += "^"
        j += 1
    first = True
    while True:
        if j >= len(pattern):
            raise RemapError(line, f"unmatched [ in {pattern!r}")
        c = pattern[j]
        if c == "]" and not first:
            return out + "]", j + 1
        first = False
        if c == "[" and j + 1 < len(pattern) and pattern[j + 1] in ":=.":
            kind = pattern[j + 1]
            end = pattern.find(kind + "]", j + 2)
            if end < 0:
                raise RemapError(line, f"unterminated [{kind} in {pattern!r}")
            name = pattern[j + 2 : end]
            if kind == ":":
                if name not in _CLASSES:
                    raise RemapError(line, f"unknown character class [:{name}:]")
                out += _CLASSES[name]
            elif len(name) == 1:
                out += re.escape(name)
            else:
                raise RemapError(line, f"unsupported collating element [{kind}{name}{kind}]")
            j = end + 2
            continue
        if c == "-" and out[-1] not in "[^" and j + 1 < len(pattern) and pattern[j + 1] != "]":
            out += "-"
        else:
            out += re.escape(c)
        j += 1


def translateRegex(pattern: str, line: int = 0) -> str:
    """
    A POSIX extended regular expression (with GNU's escapes) as a Python one.

    @raise RemapError: for what C{regcomp} refuses too: a trailing backslash, an unmatched
        bracket, C{(} followed by a repetition (which Python would read as an extension).
    """
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise RemapError(line, f"trailing backslash in {pattern!r}")
            e = pattern[i + 1]
            if e in "123456789":
                out.append("\\" + e)
            else:
                out.append(_GNU_ESCAPES.get(e) or re.escape(e))
            i += 2
        elif c == "[":
            text, i = _bracket(pattern, i, line)
            out.append(text)
        elif c == "(":
            if i + 1 < n and pattern[i + 1] in "?*+{":
                raise RemapError(line, f"repetition after ( in {pattern!r}")
            out.append("(")
            i += 1
        elif c == "{":
            interval = _INTERVAL.match(pattern, i)
            if interval is None:
                out.append(r"\{")
                i += 1
            else:
                out.append(interval.group(0))
                i = interval.end()
        elif c == "$":
            out.append(r"\Z")
            i += 1
        elif c in ")|*+?.^":
            out.append(c)
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _token(text: str, i: int) -> tuple[str, int]:
    """
    The next field of a rule line from C{i}: leading whitespace skipped, up to unescaped
    whitespace or C{#} (a comment), backslashes kept for the regex or replacement to read.
    """
    n = len(text)
    while i < n and text[i] in _SPACE:
        i += 1
    start = i
    escaped = False
    while i < n:
        c = text[i]
        if not escaped and (c in _SPACE or c == "#"):
            break
        escaped = not escaped and c == "\\"
        i += 1
    return text[start:i], i


@dataclass(frozen=True)
class RemapRule:
    """One line of a rule file."""

    line: int
    flags: str
    regex: re.Pattern[str]
    replacement: str

    def applies(self, isRead: bool, isIPv6: bool) -> bool:
        flags = self.flags
        if ("G" in flags and not isRead) or ("P" in flags and isRead):
            return False
        return not (("4" in flags and isIPv6) or ("6" in flags and not isIPv6))


def _clientMacros(client: str) -> dict[str, str]:
    address = client.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return {"i": address, "x": ""}
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return {"i": str(ip), "x": ip.packed.hex().upper()}


def expand(replacement: str, match: re.Match[str] | None, macros: dict[str, str]) -> str:
    """
    The replacement text for C{match} (None: an inverted rule's, which has no groups):
    C{\\0}-C{\\9}, C{\\i}, C{\\x}, C{\\U}/C{\\L}/C{\\E}, C{\\\\}, and C{\\c} for any other C{c}.
    """
    out: list[str] = []
    case: Callable[[str], str] = str
    i = 0
    n = len(replacement)
    while i < n:
        c = replacement[i]
        if c != "\\":
            end = replacement.find("\\", i)
            end = n if end < 0 else end
            out.append(case(replacement[i:end]))
            i = end
            continue
        if i + 1 >= n:  # a lone trailing backslash is itself
            out.append("\\")
            break
        e = replacement[i + 1]
        i += 2
        if e.isdigit() and e.isascii():
            group = match.group(int(e)) if match is not None and int(e) <= match.re.groups else None
            out.append(case(group or ""))
        elif e == "U":
            case = str.upper
        elif e == "L":
            case = str.lower
        elif e == "E":
            case = str
        elif e == "\\":
            out.append("\\")
        elif e in macros:
            out.append(case(macros[e]))
        else:
            out.append(case(e))
    return "".join(out)


class RemapRules:
    """A parsed rule file: L{rewrite} maps one request's name."""

    def __init__(self, rules: list[RemapRule], maxSteps: int = MAX_STEPS) -> None:
        self.rules = rules
        self.maxSteps = maxSteps

    @classmethod
    def parse(cls, text: str) -> RemapRules:
        """
        Parse a rule file's text (as tftpd-hpa reads it: NUL and CR are dropped).

        @raise RemapError: on the first bad line (an unknown flag, C{r} with C{~}, no
            regex, a regex that does not compile).
        """
        rules = []
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.replace("\r", "").replace("\0", "")
            flags, i = _token(line, 0)
            if not flags:
                continue
            unknown = set(flags) - _FLAGS
            if unknown:
                raise RemapError(number, f"invalid operation flag {sorted(unknown)[0]!r}")
            if "r" in flags and "~" in flags:
                raise RemapError(number, "rule flags r and ~ cannot be combined")
            source, i = _token(line, i)
            if not source:
                raise RemapError(number, "regex missing")
            replacement, _ = _token(line, i)
            try:
                regex = re.compile(
                    translateRegex(source, number),
                    re.DOTALL | (re.IGNORECASE if "i" in flags else 0),
                )
            except re.error as e:
                raise RemapError(number, f"bad regex {source!r}: {e}") from None
            except RecursionError:
                raise RemapError(number, f"regex too deeply nested: {source[:40]!r}") from None
            rules.append(RemapRule(number, flags, regex, replacement))
        return cls(rules)

    @classmethod
    def fromPath(cls, path: str | Path) -> RemapRules:
        """Read and parse a rule file (bytes as UTF-8, undecodable ones kept as escapes)."""
        return cls.parse(Path(path).read_bytes().decode("utf-8", "surrogateescape"))

    def rewrite(self, name: str, *, isRead: bool, client: str) -> str:
        """
        Run the rules over C{name}, requested by C{client} (its address).

        @raise RemapRefused: an C{a} rule matched, or the rules did not end in
            L{maxSteps} steps.
        """
        macros = _clientMacros(client)
        isIPv6 = ":" in macros["i"]
        steps = self.maxSteps

        def step() -> None:
            nonlocal steps
            steps -= 1
            if steps < 0:
                raise RemapRefused("Remap table failure")

        current = name
        index = 0
        rules = self.rules
        while index < len(rules):
            rule = rules[index]
            index += 1
            if not rule.applies(isRead, isIPv6):
                continue
            step()
            match = rule.regex.search(current)
            if "~" in rule.flags:
                if match is not None:
                    continue
            elif match is None:
                continue
            if "a" in rule.flags:
                raise RemapRefused(expand(rule.replacement, match, macros))
            if "r" in rule.flags:
                while match is not None:
                    current = (
                        current[: match.start()]
                        + expand(rule.replacement, match, macros)
                        + current[match.end() :]
                    )
                    if "g" not in rule.flags:
                        break
                    step()
                    match = rule.regex.search(current)
            if "e" in rule.flags:
                return current
            if "s" in rule.flags:
                index = 0
        return current
