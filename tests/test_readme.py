"""
The README and the pages under docs/: their library examples run as written, their links
lead somewhere, the names they mention exist, their option tables are the programs'
options, and the units they show are the shipped ones.

Convention: a fenced block whose opening fence is exactly ```` ```python runnable ```` is a
complete script (it starts and stops its own reactor, e.g. with C{task.react}, and binds
port 0 only, so it never collides with the fixed ports C{.ci/serve} uses).  This test
extracts every such block of every page and runs it with the suite's Python, in a directory
of its own and inside a network namespace of the test's own (the discovery example
broadcasts), and expects exit status 0 and no traceback.  Any other fence
(``` ```python ```, ``` ```sh ```, plain ``` ``` ```) is left alone, so a page may hold
snippets that are not scripts.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.python import usage

from tests.process import runProcess
from twisted_udpsuite import cli, tap

pytestmark = pytest.mark.integration

TOP = Path(__file__).resolve().parent.parent
README = TOP / "README.md"
DOCS = TOP / "docs"
#: Every page: the README first, then docs/ in name order.
PAGES = [README, *sorted(DOCS.glob("*.md"))]
#: The pages of the protocols, each with a service, a library, a command line and a format.
PROTOCOL_PAGES = ["echo.md", "chat.md", "discovery.md", "tftp.md", "files.md", "ipmsg.md"]

_FENCE = re.compile(r"^```.*?^```$", re.MULTILINE | re.DOTALL)
_RUNNABLE = re.compile(r"^```python runnable\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_PYTHON = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^(#{1,6}) (.+)$", re.MULTILINE)
#: Where an example names a port: a listen call's first argument, or a port= keyword.
_PORT = re.compile(r"listen(?:UDP|TCP)\(\s*(\d+)|\bport=(\d+)")
#: A markdown link, whose text may hold one level of brackets (`udpsuite chat [HOST:PORT]`).
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
#: A dotted name of the suite inside inline code.
_SUITE_NAME = re.compile(r"\btwisted_udpsuite(?:\.[A-Za-z_]\w*)+")
#: An import of the suite in an example: the module it names.
_IMPORT = re.compile(r"^\s*(?:from|import)\s+(twisted_udpsuite[\w.]*)", re.MULTILINE)


def _name(page: Path) -> str:
    return str(page.relative_to(TOP))


def _prose(text: str) -> str:
    """The page without its fenced blocks (their lines kept, blank, so offsets stay near)."""
    return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of each heading outside fenced blocks."""
    return [(len(m.group(1)), m.group(2)) for m in _HEADING.finditer(_prose(text))]


def _anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def runnableExamples() -> list[tuple[str, str]]:
    """
    (name, source) of each runnable block of every page, named after the page and the
    heading (of level 1 or 2) above it.
    """
    examples = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in _RUNNABLE.finditer(text):
            above = [t for level, t in _headings(text[: match.start()]) if level <= 2]
            examples.append((f"{_name(page)}: {above[-1] if above else 'top'}", match.group(1)))
    return examples


def test_everyPageHasItsRunnableExamples() -> None:
    """
    Every library section still marks its example runnable (a lost marker would quietly
    take the example out of the test), no other python block is a whole script, and each
    example that uses real sockets (imports twisted.internet) binds port 0 only.
    """
    names = [name for name, _ in runnableExamples()]
    for protocol in PROTOCOL_PAGES:
        assert f"docs/{protocol}: Library" in names, protocol
    assert "docs/files.md: Plain mode: the tutorials' file downloader" in names
    assert "docs/testing.md: Testing your own protocols" in names
    for page in PAGES:
        for match in _PYTHON.finditer(page.read_text(encoding="utf-8")):
            assert "task.react(" not in match.group(1), (_name(page), "not marked runnable")
    for name, source in runnableExamples():
        if "twisted.internet" not in source:
            continue  # on the in-memory network: no real port
        code = re.sub(r"#.*$", "", source, flags=re.MULTILINE)  # comments may name ports
        for match in _PORT.finditer(code):
            assert int(match.group(1) or match.group(2)) == 0, (name, match.group(0))


def test_examplesImportFromThePackages() -> None:
    """
    The examples import the suite's names from a protocol package
    (C{twisted_udpsuite.tftp}) or a top-level module (C{twisted_udpsuite.testing}), never
    from a module inside a package: the packages' C{__all__} is the library's face.
    """
    for name, source in runnableExamples():
        for module in _IMPORT.findall(source):
            assert module.count(".") <= 1, (name, module)


def test_eachProtocolHasItsPage() -> None:
    """Each protocol's page has its four parts, and the README links every page."""
    for protocol in PROTOCOL_PAGES:
        titles = [t for _, t in _headings((DOCS / protocol).read_text(encoding="utf-8"))]
        for part in ("Service", "Library", "Command line", "Wire format"):
            assert part in titles, (protocol, part)
    linked = {target.split("#")[0] for target in _LINK.findall(_prose(README.read_text()))}
    for page in PAGES[1:]:
        assert _name(page) in linked, f"the README does not link {_name(page)}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_linksLeadSomewhere(page: Path) -> None:
    """Every relative link names a file that exists and, after a #, a heading it has."""
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # https://, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), (_name(page), target)
        if anchor:
            titles = _headings(linked.read_text(encoding="utf-8"))
            assert anchor in [_anchor(t) for _, t in titles], (_name(page), target)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_namedThingsExist(page: Path) -> None:
    """
    Every C{twisted_udpsuite....} name in a page's inline code can be imported (a module,
    or an attribute of one), so a moved or renamed module shows here.
    """
    missing = []
    for code in re.findall(r"`([^`\n]+)`", _prose(page.read_text(encoding="utf-8"))):
        for dotted in _SUITE_NAME.findall(code):
            parts = dotted.split(".")
            for split in range(len(parts), 0, -1):
                try:
                    found: Any = importlib.import_module(".".join(parts[:split]))
                except ImportError:
                    continue
                for attribute in parts[split:]:
                    if not hasattr(found, attribute):
                        missing.append(dotted)
                        break
                    found = getattr(found, attribute)
                break
    assert missing == [], _name(page)


def _section(page: str, title: str) -> str:
    """The text of C{docs/page} under the heading C{## title}, to the next such heading."""
    text = (DOCS / page).read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, (page, title)
    return match.group(1)


def _tabled(section: str) -> set[str]:
    """The long options in the first column of a section's option tables."""
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `--")]
    return {option for row in rows for option in re.findall(r"`(--[a-z0-9-]+)", row)}


def _accepted(options: usage.Options, subCommands: bool = True) -> set[str]:
    """
    The long options C{options} accepts (and, with C{subCommands}, its subcommands'), but
    --help and --version.
    """
    names = {f"--{name.rstrip('=')}" for name in options.longOpt}
    if subCommands:
        for _, _, subOptions, _ in getattr(options, "subCommands", None) or []:
            names |= _accepted(subOptions())
    return names - {"--help", "--version"}


#: Where each service's options are tabled.
SERVICE_PAGES = {
    "echo": "echo.md",
    "chatroom": "chat.md",
    "responder": "discovery.md",
    "tftp": "tftp.md",
    "files": "files.md",
    "ipmsg": "ipmsg.md",
}
#: Where each command's options are tabled: (page, section).
COMMAND_PAGES = {
    "echo": ("echo.md", "Command line"),
    "send": ("command-line.md", "Sending one datagram"),
    "tftp": ("tftp.md", "Command line"),
    "fetch": ("files.md", "Command line"),
    "ls": ("files.md", "Command line"),
    "chat": ("chat.md", "Command line"),
    "discover": ("discovery.md", "Command line"),
    "ipmsg": ("ipmsg.md", "Command line"),
}


def test_optionTablesAreTheOptions() -> None:
    """
    The option tables list exactly the options the programs take: each service's (and
    C{twistd udpsuite}'s own) and each command's (C{fetch} and C{ls} share a table).
    """
    services = (DOCS / "services.md").read_text(encoding="utf-8")
    assert _tabled(services) == _accepted(tap.Options(), subCommands=False)
    assert sorted(SERVICE_PAGES) == sorted(spec.name for spec in tap.SERVICES)
    for spec in tap.SERVICES:
        assert _tabled(_section(SERVICE_PAGES[spec.name], "Service")) == _accepted(
            spec.options()
        ), spec.name
    assert sorted(COMMAND_PAGES) == sorted(command.name for command in cli.COMMANDS)
    tables: dict[tuple[str, str], set[str]] = {}
    for command in cli.COMMANDS:
        tables.setdefault(COMMAND_PAGES[command.name], set()).update(_accepted(command.options()))
    for (page, title), accepted in tables.items():
        assert _tabled(_section(page, title)) == accepted, (page, title)


def test_theUnitsShownAreTheShippedOnes() -> None:
    """
    A unit a page shows (an ini block headed by its file name) is the one in
    C{twisted_udpsuite/deploy/}, comments aside.
    """
    shown = 0
    for page in PAGES:
        for block in re.findall(r"^```ini\n(.*?)^```$", page.read_text(), re.MULTILINE | re.DOTALL):
            unit = TOP / "twisted_udpsuite" / "deploy" / block.splitlines()[0].lstrip("# ")
            if not unit.is_file():
                continue
            settings = [line for line in block.splitlines() if line and not line.startswith("#")]
            shipped = unit.read_text().splitlines()
            assert settings == [line for line in shipped if line and not line.startswith("#")]
            shown += 1
    assert shown >= 2


@pytest.mark.parametrize(
    "index", range(len(runnableExamples())), ids=[n for n, _ in runnableExamples()]
)
@pytest_twisted.ensureDeferred
async def test_example(
    reactor: Any, loopbackNamespace: list[str], tmp_path: Any, index: int
) -> None:
    """The example runs to completion: exit status 0, something printed, no traceback."""
    name, source = runnableExamples()[index]
    script = tmp_path / "example.py"
    script.write_text(source, encoding="utf-8")
    out, err, code = await runProcess(
        reactor, [*loopbackNamespace, sys.executable, str(script)], path=str(tmp_path)
    )
    assert code == 0 and b"Traceback" not in err, (name, out, err)
    assert out.strip(), name


@pytest_twisted.ensureDeferred
async def test_theReadmePutsUdpsuiteOnThePath(reactor: Any) -> None:
    """
    After the two commands, the README's own line makes C{udpsuite} a command of a fresh
    shell (one whose PATH knows nothing of the virtualenv).
    """
    venv = README.parent / ".venv"
    if Path(sys.executable).parent.parent.resolve() != venv.resolve():
        pytest.skip("the tests do not run from the checkout's .venv")
    activate = re.search(r"^(\. \.venv/bin/activate)\b", README.read_text(), re.MULTILINE)
    assert activate is not None, "the README does not say how to activate .venv"
    command = f"{activate.group(1)} && udpsuite --version && command -v udpsuite"
    out, err, code = await runProcess(
        reactor,
        ["/bin/bash", "--noprofile", "--norc", "-c", command],
        env={"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": "", "PYTHONPATH": ""},
        path=str(README.parent),
    )
    assert code == 0, err
    assert out.decode().splitlines()[1] == str(venv / "bin" / "udpsuite")
