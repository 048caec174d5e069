"""The SMTP listeners of ``kakitome serve --role smtp``: build them from the settings, run
them on the service's event loop, stop them.

Listeners (a port of 0 turns one off): the MX on ``inbound.mx_port`` (STARTTLS offered,
never required: T11), submission on ``inbound.submission_port`` (STARTTLS required before
anything but EHLO/NOOP/QUIT, then AUTH) and ``inbound.submissions_port`` (implicit TLS,
RFC 8314). All bind ``inbound.bind_host``; all share one ``CertificateSource`` (reloads
without restart) and one connection tracker (``max_connections``, and
``max_connections_per_ip`` per client address, per process). The sockets are bound with
``SO_REUSEPORT`` where the system has it, so several ``serve --role smtp`` processes of
the same user can serve the same ports, one core each (each with its own group commit).

Routes and inbound domains may change while the listeners run (the settings overlay,
``kakitome.settings_overlay``): the policy and the forwarder read them from ``live``, which
``serve`` reloads for the process, or the service itself every ``RELOAD_INTERVAL`` seconds.

Talks to: clients on the listening sockets; the database (``InboundStore``, the injector);
DNS for SPF/DKIM/DMARC of MX mail; HTTP endpoints of forward routes (``forward.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from kakitome.config import InboundSettings, Settings
from kakitome.errors import StorageError
from kakitome.inbound.forward import Forwarder
from kakitome.inbound.handler import GroupCommit, MXHandler, SubmissionHandler
from kakitome.inbound.headers import auth_lookup
from kakitome.inbound.policy import InboundPolicy
from kakitome.inbound.processor import MXProcessor
from kakitome.inbound.protocol import ConnectionLimits, ConnectionTracker, KakitomeSMTP
from kakitome.inbound.senders import SendingDomains
from kakitome.inbound.store import InboundStore, NewInbound
from kakitome.inbound.tls import CertificateSource, ensure_certificate
from kakitome.inbound.users import Authenticator, AuthGuard
from kakitome.injection import Injector
from kakitome.settings_overlay import LiveSettings
from kakitome.store.database import Database

if TYPE_CHECKING:
    from kakitome.services import Services

__all__ = ["InboundService"]

log = structlog.get_logger("kakitome.inbound")

# aiosmtpd logs every command at INFO on "mail.log" (with the client's bytes), and warns
# at each implicit-TLS connection that AUTH without STARTTLS is risky — which it is not
# when the socket is TLS from the first byte. Our own log says what matters.
_AIOSMTPD_NOISE = (
    "auth_required == True but auth_require_tls == False",
    "Session.login_data is deprecated",
)


class _QuietAiosmtpd(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in str(record.msg) for text in _AIOSMTPD_NOISE)


_aiosmtpd_log = logging.getLogger("mail.log")
_aiosmtpd_log.setLevel(logging.WARNING)
_aiosmtpd_log.addFilter(_QuietAiosmtpd())


_REUSE_PORT = hasattr(socket, "SO_REUSEPORT")


@dataclass
class _Bound:
    name: str
    server: asyncio.Server
    port: int


@dataclass
class InboundService:
    """All listeners of one process. ``await start()``; ``await stop()``."""

    services: Services
    # False: the process's settings overlay is reloaded by its owner (``serve``), not here.
    follow_settings: bool = True
    # False: no forwarder (SMTP children: the parent's forwarder forwards for all).
    forward: bool = True
    settings: Settings = field(init=False)
    store: Database = field(init=False)
    injector: Injector = field(init=False)
    clock: Callable[[], float] = field(init=False)
    inbound_store: InboundStore = field(init=False)
    # None: no certificate configured and ``inbound.self_signed_certificate`` off, so no
    # TLS (T4: no STARTTLS offered, 454 4.7.0 when asked; 465 is not started).
    certificates: CertificateSource | None = field(init=False)
    tracker: ConnectionTracker = field(init=False)
    guard: AuthGuard = field(init=False)
    ports: dict[str, int] = field(default_factory=dict)
    _servers: list[_Bound] = field(default_factory=list)
    # The settings changed at run time (routes, domains): ``services.live``, reloaded by
    # ``serve`` for the whole process, or by this service while it runs.
    live: LiveSettings = field(init=False)
    _forwarder_task: asyncio.Task[None] | None = None
    _reload_task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        services = self.services
        self.settings = services.settings
        self.store = services.store
        self.injector = services.injector
        self.clock = services.clock
        self.live = services.live
        self.inbound_store = services.inbound_store
        inbound = self.settings.inbound
        self.hostname = inbound.hostname or self.settings.delivery.helo_hostname
        pair = ensure_certificate(
            inbound.cert_file,
            inbound.key_file,
            self.settings.data_dir,
            self.hostname,
            generate=inbound.self_signed_certificate,
        )
        self.certificates = (
            None
            if pair is None
            else CertificateSource(*pair, check_interval=inbound.cert_check_interval)
        )
        self.tracker = ConnectionTracker(inbound.max_connections, inbound.max_connections_per_ip)
        self.guard = AuthGuard.from_settings(inbound)
        self.limits = ConnectionLimits(
            max_commands=inbound.max_commands,
            max_line_length=inbound.max_line_length,
            idle_timeout=inbound.idle_timeout,
        )
        lookup = auth_lookup(self.settings.dns) if inbound.check_authentication else None
        self.commit: GroupCommit[NewInbound, str] = GroupCommit(
            self.inbound_store.record_inbound_many
        )
        # Newsletter lists (issue 7): the MX takes list addresses (blank-mail sign-up,
        # mailto unsubscribe) and hands them to the ListService; confirmation mails of
        # double opt-in lists go out through the injector.
        self.lists = services.lists
        self.mx_handler = MXHandler(
            hostname=self.hostname,
            authserv_id=inbound.authserv_id or self.hostname,
            max_recipients=inbound.max_recipients,
            policy=InboundPolicy(
                inbound,
                self.inbound_store.is_return_path,
                self.lists.is_list_address,
                current=self._current_inbound,
                hostname=self.hostname,
            ),
            processor=MXProcessor(self.inbound_store, inbound, self.lists.handle_list_mail),
            commit=self.commit,
            lookup=lookup,
            clock=self.clock,
        )
        self.submission_handler = SubmissionHandler(
            hostname=self.hostname,
            max_recipients=inbound.max_recipients,
            injector=self.injector,
            authenticator=Authenticator(self.inbound_store, self.guard),
            senders=SendingDomains(self._sending_domain_names),
            clock=self.clock,
        )

    def _current_inbound(self) -> InboundSettings:
        return self.live.current.inbound

    async def _sending_domain_names(self) -> list[str]:
        return [view.name.ascii for view in await self.services.domains.list_domains()]

    def _factory(self, kind: str) -> Callable[[], KakitomeSMTP]:
        inbound = self.settings.inbound
        tls_context = None if self.certificates is None else self.certificates.front
        common = {
            "limits": self.limits,
            "tracker": self.tracker,
            "hostname": self.hostname,
            "ident": "Kakitome ESMTP",
            "data_size_limit": inbound.max_message_size,
            "enable_SMTPUTF8": True,
            "loop": asyncio.get_running_loop(),
        }

        def mx() -> KakitomeSMTP:
            # No REQUIRETLS on the MX (T28): it relays nothing over SMTP, so it could not
            # honour the requirement on a next hop; aiosmtpd answers the parameter 555.
            return KakitomeSMTP(
                self.mx_handler,
                tls_context=tls_context,
                **common,  # type: ignore[arg-type]
            )

        def submission() -> KakitomeSMTP:
            return KakitomeSMTP(
                self.submission_handler,
                tls_context=tls_context,
                require_starttls=True,
                auth_required=True,
                auth_require_tls=True,
                auth_exclude_mechanism=["CRAM-MD5"],
                requiretls=True,  # T28: offered and taken after STARTTLS only
                **common,  # type: ignore[arg-type]
            )

        def submissions() -> KakitomeSMTP:
            # The socket is TLS already: no STARTTLS (T4), and AUTH is allowed at once.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return KakitomeSMTP(
                    self.submission_handler,
                    implicit_tls=True,
                    auth_required=True,
                    auth_require_tls=False,
                    auth_exclude_mechanism=["CRAM-MD5"],
                    requiretls=True,  # T28: the socket is TLS from the first byte
                    **common,  # type: ignore[arg-type]
                )

        return {"mx": mx, "submission": submission, "submissions": submissions}[kind]

    async def start(self) -> None:
        inbound = self.settings.inbound
        loop = asyncio.get_running_loop()
        wanted = (
            ("mx", inbound.mx_port, False),
            ("submission", inbound.submission_port, False),
            ("submissions", inbound.submissions_port, True),
        )
        try:
            for name, port, implicit in wanted:
                if port == 0:
                    continue
                if implicit and self.certificates is None:
                    log.warning("no TLS certificate: implicit-TLS listener not started", port=port)
                    continue
                server = await loop.create_server(
                    self._factory(name),
                    host=inbound.bind_host,
                    port=port,
                    ssl=self.certificates.front if implicit and self.certificates else None,
                    reuse_address=True,
                    # Several `serve --role smtp` processes may share the ports (Linux
                    # spreads connections among them): one process uses one core.
                    reuse_port=_REUSE_PORT,
                    backlog=1024,
                )
                actual = server.sockets[0].getsockname()[1]
                self._servers.append(_Bound(name, server, actual))
                self.ports[name] = actual
                log.info(
                    "SMTP listener started", listener=name, host=inbound.bind_host, port=actual
                )
        except BaseException:
            await self.stop()
            raise
        if self.follow_settings:
            with contextlib.suppress(StorageError):
                await self.live.refresh()
            self._reload_task = asyncio.create_task(self.live.run(self._stop), name="settings")
        if self.forward:
            forwarder = Forwarder(
                self.inbound_store, inbound, clock=self.clock, current=self._current_inbound
            )
            self._forwarder_task = asyncio.create_task(
                forwarder.run(self._stop), name="forwarder"
            )

    async def stop(self) -> None:
        self._stop.set()
        for bound in self._servers:
            bound.server.close()
        for session in list(self.tracker.sessions):
            session.close()
        for bound in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bound.server.wait_closed(), 5)
        self._servers.clear()
        if self._forwarder_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._forwarder_task, 10)
            self._forwarder_task = None
        if self._reload_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reload_task, 10)
            self._reload_task = None
