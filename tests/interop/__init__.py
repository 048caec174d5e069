"""Interoperability tests against real, independent peers (Postfix, swaks, OpenDKIM)."""
