"""
The README's library examples run as written (issue #12 item 9).

Convention: a fenced block of README.md whose opening fence is exactly ```` ```python runnable ````
is a complete script (it starts and stops its own reactor, e.g. with C{task.react}, and
binds port 0 only, so it never collides with the fixed ports C{.ci/serve} uses).  This test
extracts every such block and runs it with the suite's Python, in a directory of its own
and inside a network namespace of the test's own (the discovery example broadcasts), and
expects exit status 0 and no traceback.  Any other fence (``` ```python ```, ``` ```sh ```,
plain ``` ``` ```) is left alone, so the README may hold snippets that are not scripts.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.process import runProcess

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parent.parent / "README.md"
_RUNNABLE = re.compile(r"^```python runnable\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: Where an example names a port: a listen call's first argument, or a port= keyword.
_PORT = re.compile(r"listen(?:UDP|TCP)\(\s*(\d+)|\bport=(\d+)")


def runnableExamples() -> list[tuple[str, str]]:
    """(name, source) of each runnable block, named after the README heading above it."""
    text = README.read_text(encoding="utf-8")
    examples = []
    for match in _RUNNABLE.finditer(text):
        headings = re.findall(r"^## (.+)$", text[: match.start()], re.MULTILINE)
        examples.append((headings[-1] if headings else "top", match.group(1)))
    return examples


def test_theReadmeHasRunnableExamples() -> None:
    """
    Every library section still marks its example runnable (a lost marker would quietly
    take the example out of the test), and each that uses real sockets (imports
    twisted.internet) binds port 0 only.
    """
    names = [name for name, _ in runnableExamples()]
    for section in ("Echo (RFC 862)", "Chat", "Discovery", "TFTP", "TCP file serving",
                    "IP Messenger (IPMsg, FeiQ, iptux)", "Testing your own protocols"):  # fmt: skip
        assert section in names, section
    for name, source in runnableExamples():
        if "twisted.internet" not in source:
            continue  # on the in-memory network: no real port
        code = re.sub(r"#.*$", "", source, flags=re.MULTILINE)  # comments may name ports
        for match in _PORT.finditer(code):
            assert int(match.group(1) or match.group(2)) == 0, (name, match.group(0))


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
