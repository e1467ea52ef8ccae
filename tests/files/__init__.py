"""Tests of the TCP file server and client (issue #7)."""
