"""The entry point of the soak tests' reactor-driven load scripts (tftpload, chatload)."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred


def runWithPlan(run: Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
    """
    Run C{run(reactor, plan)} on the reactor, C{plan} read from the JSON file named by the
    first argument; print what it returns as one JSON line.
    """

    def main(reactor: Any, path: str) -> Deferred[None]:
        plan = json.loads(Path(path).read_text())

        async def go() -> None:
            sys.stdout.write(json.dumps(await run(reactor, plan)) + "\n")

        return Deferred.fromCoroutine(go())

    task.react(main, sys.argv[1:])
