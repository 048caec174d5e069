"""Tests: sender authentication (DKIM, SPF, DMARC, Authentication-Results)."""
