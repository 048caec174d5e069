"""Sending domains: DKIM keys, the DNS records to publish, their verification, signing.

- ``names``      validate a domain name (IDN allowed; both forms kept)
- ``keybox``     private keys sealed at rest (AES-256-GCM, secret from the settings)
- ``repository`` the ``sending_domains`` and ``dkim_keys`` tables
- ``records``    the records ``kakitome domain dns`` prints (zone file and JSON)
- ``verify``     ``kakitome domain verify``: findings with remedies (English, Japanese)
- ``texts``      the words of every finding
- ``service``    add, list, show, remove, rotate, verify; periodic verification
- ``signing``    the injector's signer and VERP return paths
- ``verp``       the return-path format and how to read one back (for inbound bounces)

The DKIM, SPF and DMARC engines themselves are in ``kakitome.auth``.
"""
