"""SMTP and TLS probes of one MX address, with the delivery engine's own client code.

Talks to: one address of one MX host on ``settings.checker.port`` (25 on the internet),
over TCP, with ``smtp.stream.SMTPStream`` and ``smtp.client.SMTPClientSession`` — the same
wire code delivery uses. A probe reads the greeting, sends EHLO, STARTTLS, EHLO again and
QUIT; it never sends MAIL, RCPT or DATA, so no mail is ever sent.

Trusts: nothing the server says. The certificate is checked by a verifying handshake with
the delivery engine's opportunistic context (``tls.contexts``: the system store and/or
``tls.ca_file``); when that fails on the certificate a second connection with a
non-verifying context learns the cipher and the certificate anyway (Python 3.11 has no
verify callback), exactly as delivery does. Name matching is ``tls.contexts``'s RFC 6125
matching against the MX host name (Postfix's ``verify`` level). The chain the server sent
(``SMTPStream.peer_chain``, at most ``tls.dane.MAX_CHAIN`` certificates) is kept with the
probe so DANE-TA can be judged as delivery judges it (``tls.dane.match_tlsa``).

TLS versions are probed one per connection with contexts limited to that version, cipher
list ``ALL:@SECLEVEL=0`` so OpenSSL's security level does not hide TLS 1.0/1.1 support,
and no certificate checks. When the local OpenSSL cannot speak a version at all (some
distributions compile TLS 1.0 out) the probe says so instead of reporting "refused".

Limits: every connect is bounded by ``checker.connect_timeout``, every reply and handshake
by ``checker.command_timeout``, and the whole probe of one address (up to six connections)
by ``checker.probe_timeout``; replies are bounded by the SMTP client's line limits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import warnings
from collections.abc import Callable
from dataclasses import replace

from kakitome.checker.facts import AddressProbe, CertificateFacts, VersionProbe
from kakitome.config import CheckerSettings, Settings
from kakitome.smtp.client import SMTPClientSession, Timeouts
from kakitome.smtp.exceptions import SMTPError, TLSHandshakeError
from kakitome.smtp.stream import SMTPStream
from kakitome.tls.contexts import (
    ClientContexts,
    ContextKind,
    certificate_dns_names,
    certificate_matches,
)
from kakitome.tls.dane import MAX_CHAIN

VERSIONS: tuple[tuple[str, ssl.TLSVersion], ...] = (
    ("TLSv1", ssl.TLSVersion.TLSv1),
    ("TLSv1.1", ssl.TLSVersion.TLSv1_1),
    ("TLSv1.2", ssl.TLSVersion.TLSv1_2),
    ("TLSv1.3", ssl.TLSVersion.TLSv1_3),
)


def version_context(version: ssl.TLSVersion) -> ssl.SSLContext | None:
    """A non-verifying client context that speaks only ``version``; None when this
    OpenSSL cannot speak it at all."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = version
            ctx.maximum_version = version
    except (ssl.SSLError, ValueError):
        return None
    return ctx


def _first_word(text: str | None) -> str | None:
    if not text:
        return None
    word = text.split("\n", 1)[0].split(" ", 1)[0].strip().lower().rstrip(".")
    return word or None


class Prober:
    """Probes addresses; holds the TLS contexts (built once) and the per-IP bound.

    ``on_probe`` is called once per address probed (tests count network work with it).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        contexts: ClientContexts | None = None,
        on_probe: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.checker: CheckerSettings = settings.checker
        self.helo_name = settings.delivery.helo_hostname
        self.contexts = contexts or ClientContexts(settings.tls)
        self._on_probe = on_probe
        self._per_ip: dict[str, asyncio.Semaphore] = {}
        self._version_contexts = {name: version_context(v) for name, v in VERSIONS}
        self.timeouts = Timeouts(command=self.checker.command_timeout, data=5.0)

    def _bound(self, ip: str) -> asyncio.Semaphore:
        sem = self._per_ip.get(ip)
        if sem is None:
            sem = self._per_ip[ip] = asyncio.Semaphore(self.checker.per_host_concurrency)
        return sem

    async def probe(self, host: str, ip: str, *, versions: bool = True) -> AddressProbe:
        """Probe one address of ``host``; never raises for what the peer does."""
        if self._on_probe is not None:
            self._on_probe(host, ip)
        port = self.checker.port
        try:
            async with asyncio.timeout(self.checker.probe_timeout):
                result = await self._probe_main(host, ip)
                if versions and result.starttls_offered:
                    found = []
                    for name, _ in VERSIONS:
                        found.append(await self._probe_version(host, ip, name))
                    result = replace(result, versions=tuple(found))
                return result
        except TimeoutError:
            return AddressProbe(
                host, ip, port, reachable=False,
                error=f"no complete answer within {self.checker.probe_timeout:g} s",
            )

    async def _open(self, host: str, ip: str) -> SMTPClientSession:
        async with self._bound(ip):
            stream = await SMTPStream.connect(
                ip, self.checker.port, time_limit=self.checker.connect_timeout
            )
        return SMTPClientSession(stream, helo_name=self.helo_name, timeouts=self.timeouts)

    async def _probe_main(self, host: str, ip: str) -> AddressProbe:
        port = self.checker.port
        try:
            session = await self._open(host, ip)
        except SMTPError as exc:
            return AddressProbe(host, ip, port, reachable=False, error=str(exc))
        probe = AddressProbe(host, ip, port, reachable=True)
        try:
            banner = await session.greet()
            probe = replace(
                probe,
                banner=f"{banner.code} {banner.text.splitlines()[0] if banner.text else ''}",
                banner_code=banner.code,
                banner_name=_first_word(banner.text),
            )
            if banner.code != 220:
                return probe
            ehlo = await session.ehlo()
            probe = replace(
                probe,
                ehlo_name=_first_word(ehlo.text) if ehlo.positive else None,
                extensions=tuple(sorted(session.capabilities)),
                starttls_offered=session.supports("STARTTLS"),
            )
            if not probe.starttls_offered:
                return probe
            return await self._starttls(session, probe, verifying=True)
        except SMTPError as exc:
            return replace(probe, error=str(exc))
        finally:
            await session.quit()

    async def _starttls(
        self, session: SMTPClientSession, probe: AddressProbe, *, verifying: bool
    ) -> AddressProbe:
        kind = ContextKind.choose(mandatory=False, verifying=verifying)
        try:
            reply, info = await session.starttls(self.contexts.get(kind), probe.host)
        except TLSHandshakeError as exc:
            if exc.certificate_failure and verifying:
                await session.aclose()
                return await self._unverified(probe, exc.verify_error or str(exc))
            return replace(probe, tls_error=str(exc))
        except SMTPError as exc:
            return replace(probe, tls_error=str(exc))
        if info is None:
            return replace(probe, starttls_reply=str(reply), tls_error=f"STARTTLS refused: {reply}")
        cert = None
        matched = None
        chain = tuple(
            base64.b64encode(der).decode("ascii")
            for der in session.stream.peer_chain()[:MAX_CHAIN]
        )
        if info.peer_certificate is not None:
            with contextlib.suppress(ValueError):
                cert = CertificateFacts.from_der(info.peer_certificate)
            names = certificate_dns_names(info.peer_certificate)
            matched = certificate_matches(names, [probe.host])
        return replace(
            probe,
            tls_ok=True,
            tls_version=info.version,
            cipher=info.cipher,
            cipher_bits=info.cipher_bits,
            chain_verified=verifying and info.peer_certificate is not None,
            name_matched=matched,
            certificate=cert,
            chain=chain,
            extensions_tls=tuple(sorted(session.capabilities)),
        )

    async def _unverified(self, probe: AddressProbe, verify_error: str) -> AddressProbe:
        """A second connection with a non-verifying context, after a verification failure."""
        base = replace(probe, verify_error=verify_error)
        try:
            session = await self._open(probe.host, probe.address)
        except SMTPError as exc:
            return replace(base, tls_error=f"reconnect failed: {exc}")
        try:
            if (await session.greet()).code != 220:
                return replace(base, tls_error="greeting refused on reconnect")
            await session.ehlo()
            if not session.supports("STARTTLS"):
                return replace(base, tls_error="STARTTLS no longer offered on reconnect")
            result = await self._starttls(session, base, verifying=False)
            return replace(result, verify_error=verify_error)
        except SMTPError as exc:
            return replace(base, tls_error=str(exc))
        finally:
            await session.quit()

    async def _probe_version(self, host: str, ip: str, name: str) -> VersionProbe:
        ctx = self._version_contexts[name]
        if ctx is None:
            return VersionProbe(name, False, error="not available in the local OpenSSL")
        try:
            session = await self._open(host, ip)
        except SMTPError as exc:
            return VersionProbe(name, False, error=str(exc))
        try:
            if (await session.greet()).code != 220:
                return VersionProbe(name, False, error="greeting refused")
            await session.ehlo()
            if not session.supports("STARTTLS"):
                return VersionProbe(name, False, error="STARTTLS not offered")
            reply = await session.command(b"STARTTLS\r\n")
            if reply.code != 220:
                return VersionProbe(name, False, error=f"STARTTLS refused: {reply}")
            try:
                async with asyncio.timeout(self.checker.command_timeout):
                    info = await session.stream.start_tls(ctx, host)
            except TimeoutError:
                return VersionProbe(name, False, error="handshake timed out")
            except TLSHandshakeError as exc:
                return VersionProbe(name, False, error=str(exc))
            return VersionProbe(name, True, cipher=info.cipher)
        except SMTPError as exc:
            return VersionProbe(name, False, error=str(exc))
        finally:
            await session.quit()
