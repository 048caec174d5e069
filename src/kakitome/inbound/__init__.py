"""What Kakitome's SMTP listeners do: the MX (bounces, complaints, TLS reports, routed
mail) and submission (587 STARTTLS, 465 implicit TLS) into the one injection path.

- ``server``     the listeners (``InboundService``), started by ``serve --role smtp``
- ``protocol``   aiosmtpd's state machine with our protections (T2, T4, T5, T10, limits)
- ``handler``    the hooks: RCPT verdicts, DATA (trace fields, commit before 250), AUTH
- ``policy``     verdict objects and which recipients the MX takes (never an open relay)
- ``processor``  bounce / complaint / TLS report / route, and the effects of each
- ``bounces``    DSN parsing (RFC 3464 and the common non-standard formats)
- ``reports``    ARF complaints (RFC 5965) and TLS-RPT reports (RFC 8460)
- ``headers``    ``Received`` (T9) and ``Authentication-Results`` (T35)
- ``users``      submission credentials (argon2id) and the lockout guard
- ``tls``        the server TLS context (T41) and certificate reloading
- ``forward``    signed HTTP forwarding of routed mail
"""
