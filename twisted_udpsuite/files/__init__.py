"""TCP file serving: framing, server, resuming client and CLI (issue #7)."""
