"""
tftpd-hpa's remap files (#18 §2, C{--map-file}): the parser and rule engine of
L{twisted_udpsuite.tftp.remap} against tftpd-hpa's own documented example (the
C{sample.rules} its package ships) and man page, fuzzed, and side by side with the real
C{in.tftpd -m} on 127.0.0.1: the same rule file, the same tree and the same requests must
give the same files and the same refusals.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.process import BackgroundProcess, venvScript
from tests.tftp import peers
from tests.tftp.test_interop_client import freeUDPPort
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.client import get
from twisted_udpsuite.tftp.remap import (
    RemapError,
    RemapRefused,
    RemapRules,
    translateRegex,
)


def sampleRules() -> Path:
    """tftpd-hpa's documented example rule file, from its package (install-peers)."""
    server = Path(peers.inTftpd())
    return server.parents[1] / "share" / "doc" / "tftpd-hpa" / "examples" / "sample.rules"


def rewrite(rules: RemapRules, name: str, *, isRead: bool = True, client: str = "192.0.2.169"):
    try:
        return rules.rewrite(name, isRead=isRead, client=client)
    except RemapRefused as e:
        return ("refused", e.message)


def test_sampleRules() -> None:
    """
    tftpd-hpa's C{sample.rules}, as its comments describe it: drive letters removed,
    backslashes and hash marks converted, C{/../} defused, C{ok/} names left alone,
    relative names put under C{/tftpboot/}, C{.pvt} files refused.
    """
    rules = RemapRules.fromPath(sampleRules())
    assert [rule.flags for rule in rules.rules] == ["ri", "rg", "rg", "rg", "e", "r", "a"]
    assert rewrite(rules, "C:\\boot\\pxelinux.0") == "/boot/pxelinux.0"
    assert rewrite(rules, "pxelinux.0") == "/tftpboot/pxelinux.0"
    assert rewrite(rules, "/boot/x#y#z") == "/boot/x@y@z"
    assert rewrite(rules, "ok/a\\b") == "ok/a/b"  # e: the relative-name rule never runs
    assert rewrite(rules, "/a/../b") == "/a/..no../b"
    assert rewrite(rules, "d:keys.pvt") == ("refused", "Access violation")


def test_flagsOfTheManPage() -> None:
    """Each operation letter of in.tftpd(8), one rule file each."""
    cases = [
        ("r a b", "aaa", "baa"),  # the first match only
        ("rg a b", "aaa", "bbb"),  # again until no match
        ("r A b", "aaa", "aaa"),  # case-sensitive by default
        ("ri A b", "aaa", "baa"),
        ("e ^x\nr x y", "xx", "xx"),  # ends processing when it matches
        ("e ^q\nr x y", "xx", "yx"),
        ("r ^b c\nrs a b", "aa", "cb"),  # s: from the top again (b -> c), then a -> b again
        ("a \\.pvt$ No\\ private\\ files", "k.pvt", ("refused", "No private files")),
        ("a \\.pvt$", "k.pvt", ("refused", "Access violation")),
        ("~a ^pub/", "etc/passwd", ("refused", "Access violation")),
        ("~a ^pub/", "pub/x", "pub/x"),
        ("rG a b", "a", "b"),
        ("rP a b", "a", "a"),
        ("r4 a b", "a", "b"),
        ("r6 a b", "a", "a"),
    ]
    for text, name, expected in cases:
        assert rewrite(RemapRules.parse(text), name) == expected, text
    upload = RemapRules.parse("rP ^ uploads/")
    assert rewrite(upload, "x", isRead=False) == "uploads/x"
    assert rewrite(upload, "x") == "x"
    assert rewrite(RemapRules.parse("r6 ^ v6/"), "x", client="2001:db8::1") == "v6/x"
    assert rewrite(RemapRules.parse("r4 ^ v4/"), "x", client="::ffff:192.0.2.1") == "v4/x"


def test_replacementEscapes() -> None:
    """
    Back-references C{\\0}-C{\\9}, the client as C{\\i} and C{\\x}, case changes C{\\U},
    C{\\L} and C{\\E}, and escaped backslash, whitespace and hash mark.
    """
    rules = RemapRules.parse(
        "r ^([a-z]+)-([0-9]+)$ \\2/\\1/\\0\n"
        "r ^host$ \\i/\\x\n"
        "r ^CASE-(.*)$ \\U\\1\\Ex\\L-AB\n"
        "r ^lit$ a\\\\b\\ c\\#d\\q\n"
    )
    assert rewrite(rules, "boot-42") == "42/boot/boot-42"
    assert rewrite(rules, "host") == "192.0.2.169/C00002A9"
    assert rewrite(rules, "host", client="2001:db8::1") == (
        "2001:db8::1/20010DB8000000000000000000000001"
    )
    assert rewrite(rules, "CASE-MiXed") == "MIXEDx-ab"
    assert rewrite(rules, "lit") == "a\\b c#dq"
    # A group that took no part in the match is empty; \9 of a one-group regex too.
    assert rewrite(RemapRules.parse("r ^(a)|(b)$ [\\1\\2\\9]"), "b") == "[b]"


def test_posixRegexSyntax() -> None:
    """
    The regex is POSIX ERE (egrep), not Python's: bracket expressions with classes and
    literal backslashes, intervals, GNU word boundaries, and C{$} only at the very end.
    """
    assert rewrite(RemapRules.parse("rg [[:upper:]] _"), "AbC") == "_b_"
    assert rewrite(RemapRules.parse("rg []a] _"), "a]b") == "__b"
    assert rewrite(RemapRules.parse("rg [^[:alnum:].] x"), "a-b.c") == "axb.c"
    assert rewrite(RemapRules.parse("rg [\\\\] /"), "a\\b") == "a/b"
    assert rewrite(RemapRules.parse("r a{2,3} X"), "aaaa") == "Xa"
    assert rewrite(RemapRules.parse("r x{ y"), "ax{") == "ay"  # not an interval: literal
    assert rewrite(RemapRules.parse("rg \\<b _"), "bob b") == "_ob _"
    assert rewrite(RemapRules.parse("r (a)\\1 X"), "aa") == "X"
    assert rewrite(RemapRules.parse("r a$ X"), "a\n") == "a\n"  # Python's $ would match
    assert translateRegex("a.b") == "a.b"
    assert rewrite(RemapRules.parse("r ^a.b$ X"), "a\nb") == "X"  # . matches any character


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# ok\n\nrx a b", 3, "invalid operation flag 'x'"),
        ("r~ a b", 1, "r and ~ cannot be combined"),
        ("r", 1, "regex missing"),
        ("r # a comment, no regex", 1, "regex missing"),
        ("r (a b", 1, "bad regex"),
        ("r a\\", 1, "trailing backslash"),
        ("r [a b", 1, "unmatched ["),
        ("r [[:nope:]] b", 1, "unknown character class"),
        ("r (?i)a b", 1, "repetition after ("),
    ],
)
def test_badRuleFiles(text: str, line: int, message: str) -> None:
    """A rule file tftpd-hpa would refuse is refused, naming the line."""
    with pytest.raises(RemapError, match=re.escape(message)) as info:
        RemapRules.parse(text)
    assert info.value.line == line


def test_loopsEnd() -> None:
    """Rules that never settle are refused after a bounded number of steps."""
    assert rewrite(RemapRules.parse("rg a aa"), "a") == ("refused", "Remap table failure")
    assert rewrite(RemapRules.parse("rs a a"), "a") == ("refused", "Remap table failure")


_RULE_CHARS = "ab.*+?|()[]{}^$\\:#~ \t\n09GPrgeasi46xUL&-,"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_RULE_CHARS, max_size=80))
def test_parserNeverRaisesAnythingElse(text: str) -> None:
    """Any text is a rule file or a RemapError, never another exception."""
    try:
        RemapRules.parse(text)
    except RemapError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="rgeasi46GP~", min_size=1, max_size=3),
            st.text(alphabet="ab.*+?|()[]^$\\", min_size=1, max_size=8),
            st.text(alphabet="ab/\\0129iULE", max_size=8),
        ),
        max_size=5,
    ),
    st.text(alphabet="ab/\\.", max_size=20),
    st.booleans(),
    st.sampled_from(["192.0.2.1", "2001:db8::1", "::ffff:10.0.0.1"]),
)
def test_rewriteNeverRaisesAnythingElse(
    rules: list[tuple[str, str, str]], name: str, isRead: bool, client: str
) -> None:
    """Whatever the rules and the name: a name or a refusal, never another exception."""
    text = "\n".join(f"{flags} {regex} {replacement}" for flags, regex, replacement in rules)
    try:
        parsed = RemapRules.parse(text)
    except RemapError:
        return
    try:
        result = parsed.rewrite(name, isRead=isRead, client=client)
    except RemapRefused:
        return
    assert isinstance(result, str)


# Side by side with in.tftpd -m, on loopback

_CUSTOM_RULES = r"""
# A PXE tree as the firmware asks for it, mapped onto the tree as it is laid out.
rgi   \\                                 /     # backslashes of Windows-made paths
ri    ^/?PXELINUX\.CFG/01-([0-9a-f-]+)$   pxelinux.cfg/\L\1
r     ^boot/(.*)\.(img|bin)$              images/\2/\1
e     ^static/
r     ^whoami$                            hosts/\i
r     ^whoamihex$                         hosts/\x
a     ^secret                             Go\ away
~a    ^(pxelinux\.cfg|images|static|hosts)/
"""

_TREE = {
    "tftpboot/pxelinux.0": b"pxelinux from tftpboot",
    "boot/pxelinux.0": b"pxelinux from boot",
    "ok/a/b": b"ok a b",
    "tftpboot/a/..no../b": b"defused",
    "tftpboot/x@y": b"hash",
    "tftpboot/k.pvt": b"private",
    "pxelinux.cfg/52-54-00-ab-cd-ef": b"config of the mac",
    "images/img/kernel": b"kernel image",
    "static/a/b": b"static",
    "hosts/127.0.0.1": b"you are 127.0.0.1",
    "hosts/7F000001": b"you are 7F000001",
    "secret": b"never",
    "other": b"never either",
}

_REQUESTS = {
    "sample.rules": [
        "pxelinux.0",
        "C:\\boot\\pxelinux.0",
        "ok/a/b",
        "a/../b",
        "x#y",
        "k.pvt",
        "missing",
    ],
    "custom.rules": [
        "PXELINUX.CFG/01-52-54-00-AB-CD-EF",
        "\\pxelinux.cfg\\01-52-54-00-ab-cd-ef",
        "boot/kernel.img",
        "static\\a\\b",
        "whoami",
        "whoamihex",
        "secret",
        "secretary",
        "other",
    ],
}


async def _waitUntilServing(reactor: Any, port: int, process: BackgroundProcess) -> None:
    """Ask until the server answers at all (these rules refuse the name asked)."""
    for _ in range(200):
        try:
            await get(reactor, ("127.0.0.1", port), "probe", io.BytesIO(), tsize=False).addTimeout(
                0.05, reactor
            )
        except errors.TFTPError:
            return
        except Exception:
            continue  # not listening yet: the probe was cancelled
    raise RuntimeError(f"server on port {port} never answered: {process.output!r}")


async def _fetch(reactor: Any, port: int, name: str) -> tuple[Any, ...]:
    """The file, or the error code and message, a server answers C{name} with."""
    sink = io.BytesIO()
    try:
        await get(reactor, ("127.0.0.1", port), name, sink, tsize=False).addTimeout(10, reactor)
    except errors.TFTPError as e:
        return ("error", e.code, e.message)
    return ("file", sink.getvalue())


@pytest.mark.interop
@pytest.mark.parametrize("ruleFile", sorted(_REQUESTS))
@pytest_twisted.ensureDeferred
async def test_sameAnswersAsInTftpd(reactor: Any, tmp_path: Path, ruleFile: str) -> None:
    """
    tftpd-hpa's C{in.tftpd --secure -m RULES} and ours with C{--map-file RULES}, serving
    the same tree, give every request the same file or the same error; and the custom
    message of an C{a} rule reaches the client.
    """
    root = tmp_path / "root"
    for name, data in _TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    rules = tmp_path / "custom.rules"
    rules.write_text(_CUSTOM_RULES)
    rules = sampleRules() if ruleFile == "sample.rules" else rules
    theirs, ours = freeUDPPort(), freeUDPPort()
    tftpd = BackgroundProcess(
        reactor,
        [peers.inTftpd(), "--foreground", "--address", f"127.0.0.1:{theirs}", "--secure"]
        + ["--map-file", str(rules), str(root)],
    )
    server = BackgroundProcess(
        reactor,
        [venvScript("twistd"), "-n", "--pidfile="]
        + ["udpsuite", "tftp", "--port", str(ours), "--interface", "127.0.0.1"]
        + ["--root", str(root), "--map-file", str(rules)],
    )
    try:
        await _waitUntilServing(reactor, theirs, tftpd)
        await _waitUntilServing(reactor, ours, server)
        answers = {}
        for name in _REQUESTS[ruleFile]:
            expected = await _fetch(reactor, theirs, name)
            answers[name] = answer = await _fetch(reactor, ours, name)
            assert answer[:2] == expected[:2], name
    finally:
        await tftpd.stop()
        await server.stop()
    # Not two servers that refuse everything: files were served, and some refused.
    assert {answer[0] for answer in answers.values()} == {"file", "error"}
    if ruleFile == "custom.rules":
        assert answers["secret"] == ("error", errors.ErrorCode.ACCESS_VIOLATION, "Go away")
