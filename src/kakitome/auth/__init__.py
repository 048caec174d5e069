"""Sender authentication as a pure library: DKIM keys, signing and verification, SPF,
DMARC and Authentication-Results.

Nothing here touches storage, the web or the CLI; DNS comes in through a lookup function
the caller passes (``kakitome.auth.dnsio``), so every check runs on canned zone data in
tests and on the real resolver in production.

- ``dkim_keys``    generate RSA-2048 / Ed25519 keys, dated selectors, PEM, TXT records
- ``dkim_canon``   message splitting and simple/relaxed canonicalisation
- ``dkim_sign``    the fast signer (rsa-sha256 + ed25519-sha256 in one pass)
- ``dkim_verify``  the verifier for inbound mail
- ``spf``          ``check_host()`` per RFC 7208
- ``dmarc``        DMARC per RFC 9989 (DMARCbis): records, tree walk, alignment, result
- ``results``      Authentication-Results (RFC 8601): build, and strip forged ones
"""
