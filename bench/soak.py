"""
The soak, crash and fuzz tests of #16 (C{tests/soak/}) at full size: the same code as CI's
C{pytest -m soak}, with C{UDPSUITE_SOAK=full} (200 TFTP downloads and 20 uploads, 16 files
of 16-40 MiB for the 64 resumable downloads, four lines from each of the chat room's 500
members, 20 s of echo flood, 60 s of fuzzing per service). Each test's figures are
collected (C{UDPSUITE_SOAK_REPORT}) and printed, one section a line, at the end; they are
what the README's "Reliability" table reports.

Run as root (the tests make network namespaces), from a checkout set up with
C{bash .ci/install-peers && bash .ci/setup '.[test]'}:

    python bench/soak.py [--report soak.jsonl] [-k PYTEST_EXPRESSION]

Takes about 17 minutes on two cores. C{UDPSUITE_FUZZ_SEED} replays another fuzz seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", help="keep the figures here (JSON lines)")
    parser.add_argument("-k", dest="expression", help="only the tests pytest -k selects")
    args = parser.parse_args()
    report = Path(args.report or tempfile.mkstemp(suffix=".jsonl")[1])
    report.write_text("")
    env = dict(os.environ, UDPSUITE_SOAK="full", UDPSUITE_SOAK_REPORT=str(report), CI="true")
    argv = [sys.executable, "-m", "pytest", "-m", "soak", "-q", "tests/soak"]
    if args.expression:
        argv += ["-k", args.expression]
    status = subprocess.call(argv, cwd=REPO, env=env)
    for line in report.read_text().splitlines():
        figures = json.loads(line)
        section = figures.pop("section")
        figures.pop("full", None)
        print(f"{section}: " + ", ".join(f"{k}={v}" for k, v in sorted(figures.items())))
    return status


if __name__ == "__main__":
    sys.exit(main())
