"""C{python -m twisted_udpsuite}: the same as the C{udpsuite} console script."""

from twisted_udpsuite.cli import run

run()
