"""
LAN discovery over UDP broadcast (and IPv6 multicast): responders that
answer probes without reply storms, a discoverer that finds them, and
presence (announce, goodbye, a table of peers that expire).
"""
