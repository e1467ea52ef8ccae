"""
Running the soak tests' pieces: a pause on the reactor, a driver script of this package run
inside a namespace, a metrics scrape from inside it, and the tracebacks in a process's log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from tests.conftest import requirePeer
from tests.process import runProcess
from tests.soak import figures

REPO = Path(__file__).resolve().parents[2]
"""The checkout: the driver scripts run as C{python -m tests.soak.NAME} from it."""


def sleep(reactor: Any, seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


def driverArgv(prefix: list[str], module: str, plan: Path) -> list[str]:
    """The command that runs C{tests.soak.MODULE} with the plan file C{plan}."""
    return [*prefix, sys.executable, "-m", f"tests.soak.{module}", str(plan)]


DRIVER_ENV = {"PYTHONPATH": str(REPO)}


async def drive(
    reactor: Any, prefix: list[str], module: str, plan: dict[str, Any], path: Path, timeout: float
) -> Any:
    """Write C{plan} to C{path}, run the driver C{module} with it; the JSON it printed."""
    path.write_text(json.dumps(plan))
    argv = driverArgv(prefix, module, path)
    out, err, code = await runProcess(
        reactor, argv, env=DRIVER_ENV, path=str(REPO), timeout=timeout
    )
    assert code == 0, err.decode(errors="replace")[-3000:]
    return json.loads(out.splitlines()[-1])


async def scrape(reactor: Any, prefix: list[str], port: int) -> dict[str, float]:
    """A server's metrics on 127.0.0.1:C{port}, read from inside its namespace."""
    url = f"http://127.0.0.1:{port}/metrics"
    out, err, code = await runProcess(reactor, [*prefix, requirePeer("curl"), "-sS", url])
    assert code == 0, err
    return figures.parseMetrics(out)


def tracebacks(output: bytes) -> list[str]:
    """The lines of a log that start or report a traceback."""
    text = output.decode(errors="replace")
    return [line for line in text.splitlines() if "Traceback" in line or "Unhandled" in line]


def excerpts(output: bytes, around: int = 14) -> str:
    """The lines before and after each traceback in a log (for an assertion's message)."""
    lines = output.decode(errors="replace").splitlines()
    marks = [n for n, line in enumerate(lines) if "Traceback" in line or "Unhandled" in line]
    return "\n---\n".join("\n".join(lines[max(0, n - 2) : n + around]) for n in marks)
