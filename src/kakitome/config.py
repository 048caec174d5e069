"""Typed settings, read once at start and passed down.

Sources, later ones winning:

1. the defaults below;
2. a TOML file: ``--config PATH``, else ``$KAKITOME_CONFIG``, else ``./kakitome.toml`` if present;
3. environment variables ``KAKITOME_<SECTION>__<KEY>`` (for example
   ``KAKITOME_DATABASE__URL``, ``KAKITOME_DNS__NAMESERVERS=127.0.0.1:5353``,
   ``KAKITOME_DELIVERY__SMTP_PORT=2525``, ``KAKITOME_TLS__CA_FILE=/path/ca.pem``).
   Lists take comma-separated values or JSON; tables (such as ``tls.policy``) take JSON.

A few keys may also be changed at run time from the web UI or the API: they are kept in
the database (``kakitome.settings_overlay``, which lists them and says why those), and win
over the file and the defaults but not over the environment.

Nothing else in the code reads ``os.environ``: this module turns the environment into a
``Settings`` object, and everything else receives that object.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from kakitome.errors import ConfigError
from kakitome.tls.policy import TLSLevel

ENV_PREFIX = "KAKITOME_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    # sqlite:///relative/or/absolute/path.db or postgresql://user@host:port/db
    url: str = "sqlite:///var/kakitome.db"
    # Pool size per process for PostgreSQL; SQLite uses one writer connection.
    pool_size: int = Field(default=10, ge=1, le=200)


class DNSSettings(_Section):
    # host:port pairs; empty means the system resolver (/etc/resolv.conf).
    nameservers: tuple[str, ...] = ()
    timeout: float = Field(default=5.0, gt=0, le=60)
    # Trust the AD bit from these nameservers (they must be validating resolvers on a
    # trusted path, normally on loopback). DANE depends on it.
    trust_ad: bool = False

    @field_validator("nameservers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)


class TLSSettings(_Section):
    # Extra trust anchors (PEM) added to the system store for verifying MX certificates.
    ca_file: str | None = None
    # Use only ca_file, not the system store (for closed test worlds).
    ca_file_only: bool = False
    default_level: TLSLevel = TLSLevel.MAY
    # Per-destination table, Postfix style: {"example.com": "verify", ".example.net": "encrypt"}
    # A leading dot matches subdomains.
    policy: dict[str, TLSLevel] = Field(default_factory=dict)

    @field_validator("policy", mode="before")
    @classmethod
    def _table(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value


class DeliverySettings(_Section):
    smtp_port: int = Field(default=25, ge=1, le=65535)
    helo_hostname: str = "localhost"
    # Source address for outbound connections (None: let the kernel choose).
    source_address: str | None = None
    # Deliveries in flight across all destinations in one worker process.
    concurrency: int = Field(default=100, ge=1, le=10_000)
    # Connections at once to one destination domain from one worker process.
    per_destination_concurrency: int = Field(default=8, ge=1, le=1000)
    # Messages sent over one connection before it is closed (bounded reuse, as Postfix's
    # smtp_connection_reuse_count_limit): spreads load, limits damage of a bad session.
    messages_per_connection: int = Field(default=100, ge=1, le=100_000)
    # RCPT commands in one transaction (RFC 5321 §4.5.3.1.8 requires servers accept 100).
    recipients_per_transaction: int = Field(default=100, ge=1, le=1000)
    # Seconds an unused connection stays open in the pool.
    idle_timeout: float = Field(default=10.0, ge=0, le=300)
    connect_timeout: float = Field(default=20.0, gt=0, le=300)
    # Per-command timeout; RFC 5321 §4.5.3.2 suggests minutes, we are less patient.
    command_timeout: float = Field(default=60.0, gt=0, le=600)
    data_timeout: float = Field(default=180.0, gt=0, le=1200)
    # Largest message accepted for injection, in bytes.
    max_message_size: int = Field(default=25 * 1024 * 1024, ge=1024)


class MTASTSSettings(_Section):
    """MTA-STS (RFC 8461): policy discovery and the HTTPS fetch of policies."""

    enabled: bool = True
    # Port of https://mta-sts.<domain>/ (443 on the internet; tests use a loopback port).
    https_port: int = Field(default=443, ge=1, le=65535)
    # RFC 8461 §3.3: fetches are bounded in time and size (64 KiB is the RFC's figure).
    fetch_timeout: float = Field(default=15.0, gt=0, le=120)
    max_policy_bytes: int = Field(default=65_536, ge=1024, le=1_048_576)
    # Cached policies are re-fetched when this much of max_age is left (proactive refresh).
    refresh_before: float = Field(default=86_400.0, ge=0)
    # Seconds a discovery result is reused in-process before the TXT record is asked again.
    recheck_interval: float = Field(default=60.0, ge=0)
    # The policy we publish for our own domains at https://mta-sts.<domain>/ (web role).
    # Start in "testing" and move to "enforce" once TLS-RPT reports show no failures.
    policy_mode: str = Field(default="testing", pattern="^(enforce|testing|none)$")
    # MX patterns in our policy; empty: the inbound host name (else the HELO name).
    policy_mx: tuple[str, ...] = ()
    policy_max_age: int = Field(default=604_800, ge=86_400, le=31_557_600)

    @field_validator("policy_mx", mode="before")
    @classmethod
    def _mx_list(cls, value: Any) -> Any:
        return _split_list(value)


class DANESettings(_Section):
    """DANE (RFC 7672): used only when dns.trust_ad says the resolver validates."""

    enabled: bool = True


class TLSRPTSettings(_Section):
    """TLS-RPT (RFC 8460): aggregate reports of our TLS sessions, sent once a UTC day."""

    enabled: bool = True
    organization_name: str = "Kakitome"
    contact_info: str = "postmaster@localhost"
    # The report mail's sender (envelope and From); default postmaster@<helo hostname>.
    sender: str | None = None
    # Seconds between checks for finished days to report.
    interval: float = Field(default=3600.0, gt=0)
    https_timeout: float = Field(default=30.0, gt=0, le=300)


class StrippingSettings(_Section):
    """STARTTLS-stripping detection: remember which MX hosts offered STARTTLS."""

    enabled: bool = True
    # Defer (instead of plaintext) when a host that offered STARTTLS within this many
    # seconds stops offering it, or shows a certificate that no longer verifies.
    defer: bool = True
    window: float = Field(default=86_400.0, ge=0)


class QueueSettings(_Section):
    # Exponential back-off: first retry after retry_first seconds, multiplied by
    # retry_factor each time, never more than retry_max; bounce after lifetime.
    retry_first: float = Field(default=300.0, ge=0)
    retry_factor: float = Field(default=2.0, ge=1.0)
    retry_max: float = Field(default=14_400.0, ge=0)
    lifetime: float = Field(default=5 * 86_400.0, ge=0)
    # A claimed delivery belongs to a worker for this long; a dead worker's work returns
    # to the queue when it runs out.
    lease_seconds: float = Field(default=300.0, gt=0)
    # Deliveries claimed per round (the active window).
    batch_size: int = Field(default=500, ge=1, le=100_000)
    # Seconds between polls when nothing wakes the worker.
    poll_interval: float = Field(default=1.0, gt=0, le=60)


def auto_count(value: Any) -> Any:
    """A process count setting: "auto" is one per CPU; anything else is left to the field."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return os.cpu_count() or 1
    return value


class HTTPSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=0, le=65535)
    # The address people use to reach the service (links in mail, printed URL).
    public_url: str | None = None
    # Messages in one POST /api/v1/messages/batch: all are checked, then committed in one
    # transaction; a batch is read whole into memory, so this bounds a request's size.
    max_batch_messages: int = Field(default=500, ge=1, le=10_000)
    # Processes answering HTTP on the port (SO_REUSEPORT; the kernel spreads connections):
    # `serve` starts processes - 1 web-only children beside itself, so injection (HTTP,
    # MIME building, DKIM signing) is not limited to one core; "auto": one per CPU.
    processes: int = Field(default=1, ge=1, le=256)

    @field_validator("processes", mode="before")
    @classmethod
    def _processes(cls, value: Any) -> Any:
        return auto_count(value)


class LogSettings(_Section):
    # "console" for people, "json" for log collectors (one JSON object a line).
    format: str = Field(default="console", pattern="^(console|json)$")
    level: str = Field(default="info", pattern="^(?i)(debug|info|warning|error)$")


class PathSettings(_Section):
    data_dir: str = "var"


class CheckerSettings(_Section):
    """The security checker (``kakitome check``): how hard and how long it probes."""

    # TCP port of the SMTP probes (25 on the internet; tests point it at the world's port).
    port: int = Field(default=25, ge=1, le=65535)
    # Port of the MTA-STS policy host (443 on the internet; RFC 8461 §3.3).
    https_port: int = Field(default=443, ge=1, le=65535)
    # Seconds for the TCP connect, for each SMTP reply and TLS handshake, and for the
    # whole probe of one address (a host that trickles bytes cannot hold it longer).
    connect_timeout: float = Field(default=10.0, gt=0, le=300)
    command_timeout: float = Field(default=15.0, gt=0, le=300)
    probe_timeout: float = Field(default=60.0, gt=0, le=900)
    # Seconds for the whole MTA-STS policy fetch (RFC 8461 §3.3 suggests about a minute).
    policy_timeout: float = Field(default=20.0, gt=0, le=300)
    # Probes in flight at once, and at once against one IP address: a list check must not
    # look like an attack to a provider that hosts thousands of the list's domains.
    concurrency: int = Field(default=50, ge=1, le=1000)
    per_host_concurrency: int = Field(default=2, ge=1, le=50)
    # Seconds a list check reuses earlier DNS facts and probe results (0: never).
    cache_ttl: float = Field(default=3600.0, ge=0)
    # Entries kept in the cache file (oldest dropped first).
    cache_entries: int = Field(default=50_000, ge=0, le=1_000_000)
    # A certificate expiring within this many days is a warning.
    expiry_warning_days: int = Field(default=14, ge=0, le=365)


class DomainSettings(_Section):
    """Sending domains (kakitome.domains): what the DNS records say and how keys are kept."""

    # Addresses mail leaves from: they go into the SPF records we ask people to publish,
    # and verify checks that SPF covers them and that each has a forward-confirmed PTR.
    sending_ips: tuple[str, ...] = ()
    # An SPF include for a relay or a fleet (e.g. "_spf.mail.example.net"), instead of or
    # as well as sending_ips.
    spf_include: str | None = None
    # The return-path (VERP bounce) domain is <label>.<sending domain>.
    return_path_label: str = Field(
        default="bounce", pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
    )
    # The host that receives bounces for return-path domains (their MX); None: helo_hostname.
    return_path_mx: str | None = None
    # Where DMARC aggregate / TLS-RPT reports go; None: dmarc@ / tls-reports@ the
    # return-path domain (which is ours, so no authorisation record is needed).
    dmarc_rua: str | None = None
    tlsrpt_rua: str | None = None
    # Accept mail From domains that are not configured (sent unsigned). Off: refused.
    allow_unconfigured_from: bool = False
    # The secret DKIM private keys are encrypted with at rest: a passphrase, or a file
    # holding one; with neither, a random one is made in <data_dir>/domain-keys.secret (0600).
    key_passphrase: SecretStr | None = None
    key_file: str | None = None
    # Seconds between re-verifications by `serve` (worker role); 0 turns them off.
    verify_interval: float = Field(default=3600.0, ge=0)
    # Seconds a rotated-out DKIM key stays published after its successor took over.
    rotation_grace: float = Field(default=7 * 86_400.0, ge=0)
    # Seconds between reloads of the signing keys by processes that inject mail.
    signer_refresh: float = Field(default=60.0, gt=0)

    @field_validator("sending_ips", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("sending_ips")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_address(v.strip())) for v in value)


class InboundRoute(_Section):
    """Where mail for one of our inbound addresses goes (first matching route wins).

    ``match``: ``user@example.com`` (one address), ``@example.com`` or ``example.com``
    (a whole domain), or ``*`` (everything else). ``action``: ``forward`` (POST the message
    to ``url``, signed with HMAC-SHA256 under ``secret``), ``hold`` (keep it for people to
    read), or ``reject`` (refuse at RCPT with 550 5.1.1).
    """

    match: str
    action: str = Field(pattern="^(forward|hold|reject)$")
    url: str | None = None
    secret: SecretStr | None = None


class InboundSettings(_Section):
    """The SMTP listeners (kakitome.inbound): MX on 25, submission on 587 and 465."""

    # Ports; 0 turns a listener off (use high ports for unprivileged runs and tests).
    mx_port: int = Field(default=25, ge=0, le=65535)
    submission_port: int = Field(default=587, ge=0, le=65535)
    submissions_port: int = Field(default=465, ge=0, le=65535)
    bind_host: str = "0.0.0.0"
    # The name in our greeting and Received fields; None: delivery.helo_hostname.
    hostname: str | None = None
    # Our authserv-id in Authentication-Results (RFC 8601); None: the hostname.
    authserv_id: str | None = None
    # PEM certificate chain and key; None: a self-signed pair made in the data dir at first
    # start (with a warning). Both files are checked for changes and reloaded.
    cert_file: str | None = None
    key_file: str | None = None
    # With no cert_file: make a self-signed pair (true) or run without TLS (false: no
    # STARTTLS offered on 25/587, 454 4.7.0 when asked, no 465 listener; T4).
    self_signed_certificate: bool = True
    # Seconds between checks of the certificate files' modification times.
    cert_check_interval: float = Field(default=5.0, ge=0)
    # Domains (besides the return-path domains) whose mail we take on the MX.
    domains: tuple[str, ...] = ()
    # Return-path domains taking any local part (VERP addresses of messages we sent are
    # accepted on their own, found by the message's envelope sender).
    return_path_domains: tuple[str, ...] = ()
    routes: tuple[InboundRoute, ...] = ()
    # Limits. Size as the SIZE extension advertises it (RFC 1870).
    max_message_size: int = Field(default=25 * 1024 * 1024, ge=1024)
    # RFC 5321 §4.5.3.1.8: at least 100 recipients must be accepted.
    max_recipients: int = Field(default=100, ge=1, le=10_000)
    # RFC 5321 §4.5.3.1.6: 998 octets + CRLF (+ 1 for a transparency dot) per line.
    max_line_length: int = Field(default=1001, ge=1001, le=65_536)
    # Commands in one connection (a session that never ends is somebody probing).
    max_commands: int = Field(default=10_000, ge=10)
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_ip: int = Field(default=20, ge=1)
    # Seconds without a command before the connection is closed (RFC 5321 §4.5.3.2.7
    # asks a server for 5 minutes; we are less patient).
    idle_timeout: float = Field(default=120.0, gt=0, le=600)
    # Authentication failures: each failure waits failure_delay × failures in a row
    # (capped at 5 s); max_auth_failures within auth_window seconds locks the client
    # address and the user name out for auth_lockout seconds.
    auth_failure_delay: float = Field(default=1.0, ge=0, le=10)
    max_auth_failures: int = Field(default=5, ge=1)
    auth_window: float = Field(default=900.0, gt=0)
    auth_lockout: float = Field(default=900.0, ge=0)
    # Suppress an address after this many permanent / temporary bounces.
    permanent_bounce_threshold: int = Field(default=1, ge=1)
    temporary_bounce_threshold: int = Field(default=3, ge=1)
    # Decompressed TLS-RPT reports larger than this are refused (gzip bombs).
    max_report_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # Forwarding to HTTP routes: timeout per POST, attempts before giving up.
    forward_timeout: float = Field(default=30.0, gt=0, le=300)
    forward_attempts: int = Field(default=10, ge=1)
    # Check SPF, DKIM and DMARC of MX mail (Authentication-Results); off: "none".
    check_authentication: bool = True
    # Processes accepting SMTP (sharing the ports with SO_REUSEPORT): `serve` starts
    # processes - 1 smtp-only children beside itself; "auto": one per CPU. Connection and
    # auth-failure limits are counted per process.
    processes: int = Field(default=1, ge=1, le=256)

    @field_validator("processes", mode="before")
    @classmethod
    def _processes(cls, value: Any) -> Any:
        return auto_count(value)

    @field_validator("domains", "return_path_domains", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("domains", "return_path_domains")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lower().rstrip(".") for v in value if v.strip())

    @field_validator("routes", mode="before")
    @classmethod
    def _routes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else ()
        return value


class ListSettings(_Section):
    """Lists and subscribers (kakitome.lists): tokens, double opt-in, bounce cleaning."""

    # The HMAC secret of unsubscribe and confirmation tokens (at least 16 characters);
    # None: 32 random bytes made on first use in <data_dir>/lists-token.secret (0600).
    # Several machines sharing PostgreSQL must share it, or links made on one fail on another.
    token_secret: SecretStr | None = None
    # Seconds a double opt-in confirmation link stays valid.
    confirmation_lifetime: float = Field(default=7 * 86_400.0, gt=0)
    # One permanent or three temporary failures mark a subscriber bounced on every list;
    # temporary failures count within the window (seconds).
    permanent_bounce_threshold: int = Field(default=1, ge=1)
    temporary_bounce_threshold: int = Field(default=3, ge=1)
    temporary_bounce_window: float = Field(default=30 * 86_400.0, gt=0)
    # Subscriber history (opt-in records excepted: they live as long as the subscriber)
    # is kept this long; at least 90 days, as the bounce-cleaning record must be.
    history_retention: float = Field(default=180 * 86_400.0, ge=90 * 86_400.0)
    # Rows per INSERT batch of a CSV import.
    import_batch_size: int = Field(default=5_000, ge=100, le=100_000)
    # Lists whose finished campaigns are shown on the public archive (バックナンバー).
    public_archive: tuple[str, ...] = ()

    @field_validator("public_archive", mode="before")
    @classmethod
    def _archive_list(cls, value: Any) -> Any:
        return _split_list(value)


class CampaignSettings(_Section):
    """Campaigns and step mail (kakitome.campaigns): batches, tracking, text layout."""

    # Messages rendered, injected and checkpointed per transaction: a crash or a pause
    # stops at a batch boundary, and a batch is one group commit.
    batch_size: int = Field(default=500, ge=1, le=10_000)
    # Seconds between the worker's looks for due campaigns and step mail.
    poll_interval: float = Field(default=5.0, gt=0, le=600)
    # Open pixel and click redirects for new campaigns and sequences (each can turn it off).
    tracking: bool = True
    # HMAC secret of tracking links (at least 16 characters); None: 32 random bytes made on
    # first use in <data_dir>/campaign-links.secret (0600). Web and worker must share it.
    link_secret: SecretStr | None = None
    # Text parts are wrapped at this many display columns (full-width characters count
    # two, so 76 is 38 Japanese characters); 0: only at RFC 5322's 998 octets.
    wrap_width: int = Field(default=76, ge=0, le=998)
    # The sender part of Feedback-ID (Gmail's feedback loop): the same for all our mail.
    feedback_id_sender: str = Field(default="kakitome", pattern=r"^[A-Za-z0-9._-]{1,40}$")


class SiteLimits(_Section):
    """The budget of one destination site (kakitome.delivery.shaping), shared by every
    worker process on the database."""

    # Connections open at once to the site, across all workers (a ceiling: slow start
    # begins at initial_connections and grows by one per successful transaction).
    max_connections: int = Field(default=20, ge=1, le=1000)
    initial_connections: int = Field(default=2, ge=1, le=1000)
    # Messages over one connection before it is closed (also bounded by
    # delivery.messages_per_connection); 0: delivery.messages_per_connection alone.
    messages_per_connection: int = Field(default=0, ge=0, le=100_000)
    # Messages per minute to the site across all workers; 0: no rate limit.
    messages_per_minute: int = Field(default=0, ge=0, le=10_000_000)


class ShapingSettings(_Section):
    """Shaping per destination site: domains whose primary MX is at one provider share one
    budget (see kakitome.delivery.shaping for the rule and the built-in providers)."""

    enabled: bool = True
    # Budget of a site that has no entry of its own.
    default: SiteLimits = Field(default_factory=SiteLimits)
    # Per-site budgets, over the built-in ones: {"google.com": {"max_connections": 30}}.
    sites: dict[str, SiteLimits] = Field(default_factory=dict)
    # More MX host suffixes of providers, over the built-in ones: {"mx.example.net": "example.net"}.
    providers: dict[str, str] = Field(default_factory=dict)
    # After a 421 or a 4.7.x reply the site's connection window halves and does not grow
    # again for this many seconds (one halving per cool-down, however many workers saw it).
    cooldown: float = Field(default=60.0, ge=0, le=86_400)
    # Seconds a connection slot of a worker that died stays taken (live workers renew).
    slot_lease: float = Field(default=30.0, ge=1, le=3600)

    @field_validator("default", "sites", "providers", mode="before")
    @classmethod
    def _table(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value


class ScaleSettings(_Section):
    """Running many worker processes (docs/SCALING.md)."""

    # Prometheus metrics of a process without the web role on http://metrics_host:port/metrics;
    # 0: off (the web role serves /metrics on the HTTP port).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # Renew this worker's delivery leases every lease_seconds / 3, so a slow attempt
    # (a site's rate limit, a slow peer) is not taken over by another worker.
    renew_leases: bool = True
    # Delivery worker processes `serve` runs for the worker role: 0, the worker runs inside
    # the serve process; N, serve starts N worker-only child processes beside itself (the
    # web role's signing and the delivery then use different cores); "auto": one per CPU.
    worker_processes: int = Field(default=0, ge=0, le=256)

    @field_validator("worker_processes", mode="before")
    @classmethod
    def _worker_processes(cls, value: Any) -> Any:
        return auto_count(value)


class WebhookSettings(_Section):
    """Webhooks (kakitome.webhooks): how events are POSTed to endpoints and retried."""

    # The dispatcher runs in the worker role; off: events are not posted (nor queued).
    enabled: bool = True
    # Seconds for one POST (connect, send, read the answer).
    timeout: float = Field(default=10.0, gt=0, le=120)
    # POSTs in flight at once (all endpoints together).
    concurrency: int = Field(default=8, ge=1, le=256)
    # Attempts before a delivery is given up; the wait doubles from retry_first seconds,
    # capped at retry_max.
    max_attempts: int = Field(default=10, ge=1, le=100)
    retry_first: float = Field(default=30.0, gt=0)
    retry_max: float = Field(default=3600.0, gt=0)
    # Seconds between looks for new events and due deliveries when idle.
    poll_interval: float = Field(default=2.0, gt=0, le=300)


class Settings(_Section):
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    dns: DNSSettings = Field(default_factory=DNSSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    paths: PathSettings = Field(default_factory=PathSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    mta_sts: MTASTSSettings = Field(default_factory=MTASTSSettings)
    dane: DANESettings = Field(default_factory=DANESettings)
    tlsrpt: TLSRPTSettings = Field(default_factory=TLSRPTSettings)
    stripping: StrippingSettings = Field(default_factory=StrippingSettings)
    domains: DomainSettings = Field(default_factory=DomainSettings)
    checker: CheckerSettings = Field(default_factory=CheckerSettings)
    inbound: InboundSettings = Field(default_factory=InboundSettings)
    lists: ListSettings = Field(default_factory=ListSettings)
    campaigns: CampaignSettings = Field(default_factory=CampaignSettings)
    shaping: ShapingSettings = Field(default_factory=ShapingSettings)
    scale: ScaleSettings = Field(default_factory=ScaleSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    # "section.key" names the environment set (load_settings): they win over the database
    # overlay. And, on settings with that overlay applied (kakitome.settings_overlay), the
    # settings from before it (defaults, file, environment), so the overlay can be re-applied.
    _env_keys: frozenset[str] = PrivateAttr(default_factory=frozenset)
    _before_overlay: Settings | None = PrivateAttr(default=None)

    @property
    def data_dir(self) -> Path:
        return Path(self.paths.data_dir)

    @property
    def env_keys(self) -> frozenset[str]:
        """The ``section.key`` names set by ``KAKITOME_<SECTION>__<KEY>`` variables."""
        return self._env_keys


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    sections = set(Settings.model_fields)
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        if section not in sections:
            raise ConfigError(f"{name}: unknown settings section {section!r}")
        out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def config_path(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    """The TOML file to read, or None when there is none to read."""
    if explicit:
        return Path(explicit)
    if environ.get("KAKITOME_CONFIG"):
        return Path(environ["KAKITOME_CONFIG"])
    default = Path("kakitome.toml")
    return default if default.exists() else None


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the settings once: defaults, then the TOML file, then the environment.

    Raises ConfigError with the offending key when something does not parse.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    file = config_path(path, env)
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"settings file not found: {file}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: {exc}") from exc
    overrides = _env_overrides(env)
    data = _merge(data, overrides)
    try:
        settings = Settings.model_validate(data)
        settings._env_keys = frozenset(
            f"{section}.{key}" for section, keys in overrides.items() for key in keys
        )
        return settings
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON in settings: {exc}") from exc
