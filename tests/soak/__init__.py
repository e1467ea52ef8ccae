"""
Soak, crash and fuzz tests (#16): many clients at once, real loss, killed processes and
seeded garbage against the real services. Marked C{soak} (C{pytest -m soak} runs them
alone); C{UDPSUITE_SOAK=full} runs the same code at the sizes of C{bench/soak.py}.
"""
