"""Tests for the shared option helpers in L{twisted_udpsuite.service}."""

from __future__ import annotations

import pytest
from twisted.python import usage

from twisted_udpsuite.service import checkInterface, checkPort, numberOption


@pytest.mark.parametrize(
    "coerce, value, expected",
    [
        (numberOption("n", int, low=1), "5", 5),
        (numberOption("n", low=0, high=2), "2", 2.0),
        (numberOption("n", above=0), "0.5", 0.5),
        (numberOption("n", low=0, zeroMeansNone=True), "0", None),
        (numberOption("n", low=0, zeroMeansNone=True), "3", 3.0),
    ],
)
def test_numberOptionAccepts(coerce, value, expected) -> None:  # type: ignore[no-untyped-def]
    """Numbers of the right kind within the bounds pass (0 may mean 'none')."""
    assert coerce(value) == expected


@pytest.mark.parametrize(
    "coerce, value, message",
    [
        (numberOption("count", int, low=1), "x", "--count: 'x' is not a whole number"),
        (numberOption("count", int, low=1), "1.5", "--count: '1.5' is not a whole number"),
        (numberOption("count", int, low=1), "0", "--count: must be at least 1"),
        (numberOption("rate", low=0, high=2), "3", "--rate: must be from 0 to 2"),
        (numberOption("rate", high=2), "3", "--rate: must be at most 2"),
        (numberOption("wait", above=0), "0", "--wait: must be greater than 0"),
        (numberOption("wait", above=0), "nan", "--wait: must be greater than 0"),
        (numberOption("wait", low=0), "inf", "--wait: must be at least 0"),
        (numberOption("wait", low=0), "ten", "--wait: 'ten' is not a number"),
    ],
)
def test_numberOptionRefuses(coerce, value, message) -> None:  # type: ignore[no-untyped-def]
    """Out-of-range, non-finite or non-numeric values are one clear UsageError."""
    with pytest.raises(usage.UsageError) as e:
        coerce(value)
    assert str(e.value) == message


def test_portAndInterface() -> None:
    """Ports are 0..65535; interfaces are '', '::' or an IP address."""
    assert checkPort("0") == 0 and checkPort("65535") == 65535
    for bad in ("65536", "-1", "x", ""):
        with pytest.raises(usage.UsageError):
            checkPort(bad)
    assert checkInterface("") == "" and checkInterface("::") == "::"
    assert checkInterface("127.0.0.1") == "127.0.0.1"
    with pytest.raises(usage.UsageError):
        checkInterface("localhost")
