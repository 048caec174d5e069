"""`kakitome serve`: start the roles of the service in one process and stop them gracefully.

Roles: ``web`` (HTTP API and pages), ``worker`` (the scheduler loop and delivery agents),
``smtp`` (inbound listeners, added by the inbound work). Without roles, all of them start.

On SIGTERM or SIGINT the web server stops accepting connections, the worker stops
claiming, finishes what is in flight and releases its leases; then the process exits.

With SQLite (one machine) leases left by a process that died are released at start, so a
restart after SIGKILL resumes at once instead of waiting for the leases to run out. With
PostgreSQL other workers may hold leases, so they expire.

Scale-out (docs/SCALING.md): on PostgreSQL the worker's shaping budgets per destination
site live in the database (``ShapingStore``), shared by every worker process; on SQLite in
the process. The process's delivery metrics are served by the web role's ``/metrics`` and,
when ``scale.metrics_port`` is set, on that port (for worker-only processes). Logging is
configured from ``log.format`` and ``log.level`` before anything starts.

Settings changed at run time (``kakitome.settings_overlay``): at start the database
overlay is applied to the settings from file and environment, and a ``settings`` task
re-reads it every few seconds. The MX takes the new routes and domains for the next RCPT;
the delivery agent and its pool take the TLS policy, stripping and per-destination
concurrency for the next batch; everything else built at start keeps what it was given
(those keys are marked "at next start" in the UI and the API).

Several worker processes (``scale.worker_processes`` = N > 0, "auto": one per CPU): the
process with the ``worker`` role does not deliver itself but starts N children that run
the ``worker`` role only, the same way as the SMTP children below (settings on stdin, EOF
stops them, SIGTERM when the parent stops: each drains and releases its leases). On
SQLite the parent releases stale leases once, before they start.

Several SMTP processes (``inbound.processes`` > 1, "auto": one per CPU): after its own
listeners are bound, the process with the ``smtp`` role starts ``processes - 1`` children
that run the ``smtp`` role only and bind the same ports (``SO_REUSEPORT``; the kernel
spreads connections among them), so acceptance is not limited to one core. Each child
gets the settings (with the actual ports) pickled on its stdin, which then stays open:
EOF on it — the parent exited or was killed — stops the child, with no Linux-only
``prctl``. The parent sends SIGTERM to its children when it stops (and SIGKILL after
10 s). Children do not run the inbound forwarder (the parent's one forwards for all).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from kakitome.config import Settings
from kakitome.store.database import Database

if TYPE_CHECKING:
    import uvicorn

    from kakitome.accounts.api_keys import ApiKeyStore
    from kakitome.delivery.agent import DeliveryAgent
    from kakitome.delivery.pool import ConnectionPool
    from kakitome.delivery.shaping import Shaper
    from kakitome.inbound.server import InboundService
    from kakitome.services import Services

log = structlog.get_logger("kakitome.runtime")

ALL_ROLES = ("web", "worker", "smtp")


def _quiet_server_class() -> type[uvicorn.Server]:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its own signal handling: ours stops every role, not just web;
        ``listening`` is set once its listener serves."""

        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self.listening = asyncio.Event()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            self.listening.set()

    return QuietServer


def follow_settings(agent: DeliveryAgent) -> Callable[[Settings], None]:
    """A ``LiveSettings`` subscriber handing reloaded settings to the delivery agent, its
    TLS policy resolver and its pool: the next batch uses the new TLS policy table and
    level, stripping handling and per-destination concurrency."""

    def follow(new: Settings) -> None:
        agent.settings = new
        agent.policies.settings = new
        agent.pool.settings = new.delivery

    return follow


async def ensure_first_api_key(keys: ApiKeyStore, out: TextIO) -> None:
    """On the very first start, make an API key with every scope and print it once."""
    if not await keys.list_api_keys():
        key = await keys.create_api_key("initial", ["send", "read", "admin"], now=time.time())
        print(f"API key (shown once, keep it): {key}", file=out, flush=True)
    else:
        print("API keys exist; make another with `kakitome apikey create NAME`.", file=out)


def _reuseport_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket that other processes may bind too (SO_REUSEPORT); listening unless
    ``listen`` is false (bound only: it takes no connections until ``listen()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(False)
    return sock


LISTEN_BACKLOG = 2048
SWITCH_INTERVAL = 0.0005  # seconds (sys.setswitchinterval; Python's default is 0.005)
# A web child's bytes on its stdout, the pipe to the parent.
CHILD_READY = b"r"  # its listener is serving
CHILD_COMMITTED = b"w"  # it committed new mail (SQLite: the parent wakes the workers)
# How long the parent waits for its web children's listeners before it opens its own.
WEB_CHILDREN_START_TIMEOUT = 60.0


def _tell_parent(store: Database, server: uvicorn.Server) -> asyncio.Task[None]:
    """In a web child (stdout is a pipe to the parent): a byte once the listener serves,
    and on SQLite a byte after each commit of new mail, so the parent wakes its
    worker(s) (see _listen_to_children)."""
    fd = sys.stdout.fileno()
    os.set_blocking(fd, False)

    def send(byte: bytes) -> None:
        with contextlib.suppress(OSError):  # a full pipe: the parent has wake-ups pending
            os.write(fd, byte)

    if store.dialect != "postgresql":  # PostgreSQL: NOTIFY reaches every worker
        store.add_wake_listener(lambda: send(CHILD_COMMITTED))

    async def ready() -> None:
        await server.listening.wait()  # type: ignore[attr-defined]  # QuietServer
        send(CHILD_READY)

    return asyncio.create_task(ready(), name="web-child-ready")


def _listen_to_children(
    store: Database, children: Sequence[subprocess.Popen[bytes]]
) -> asyncio.Future[None]:
    """Wake this process's worker (and its worker children) when a web child says it
    committed new mail; the future resolves once every child's listener serves (or a
    child has ended: its pipe closed)."""
    loop = asyncio.get_running_loop()
    all_ready: asyncio.Future[None] = loop.create_future()
    waiting = {child.pid for child in children if child.stdout is not None}

    def ready(pid: int) -> None:
        waiting.discard(pid)
        if not waiting and not all_ready.done():
            all_ready.set_result(None)

    for child in children:
        if child.stdout is None:
            continue
        fd = child.stdout.fileno()

        def read(fd: int = fd, pid: int = child.pid) -> None:
            told = False
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                while data := os.read(fd, 4096):
                    if not told and CHILD_READY in data:
                        told = True
                        loop.call_soon_threadsafe(ready, pid)
                    if CHILD_COMMITTED in data:
                        loop.call_soon_threadsafe(store.work_committed)
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                loop.call_soon_threadsafe(ready, pid)

        threading.Thread(target=read, name="web-child-watch", daemon=True).start()
    if not waiting:
        all_ready.set_result(None)
    return all_ready


def _start_children(
    settings: Settings, role: str, count: int, *, stdout: bool = False
) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` children that serve ``role`` only, with ``settings`` on their stdin
    (and, with ``stdout``, their stdout a pipe to us)."""
    payload = pickle.dumps(settings)
    children = []
    for _ in range(count):
        child = subprocess.Popen(
            [sys.executable, "-c", "from kakitome.runtime import role_child; role_child()", role],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
        )
        assert child.stdin is not None
        child.stdin.write(struct.pack("!Q", len(payload)) + payload)
        child.stdin.flush()  # and kept open: its EOF tells the child we are gone
        children.append(child)
    log.info(f"{role} child processes started", pids=[c.pid for c in children])
    return children


def _start_smtp_children(
    settings: Settings, ports: dict[str, int]
) -> list[subprocess.Popen[bytes]]:
    """Start ``inbound.processes - 1`` smtp-only children on the ports the parent bound."""
    inbound = settings.inbound.model_copy(
        update={
            "processes": 1,
            "mx_port": ports.get("mx", 0),
            "submission_port": ports.get("submission", 0),
            "submissions_port": ports.get("submissions", 0),
        }
    )
    child_settings = settings.model_copy(update={"inbound": inbound})
    return _start_children(child_settings, "smtp", settings.inbound.processes - 1)


async def _stop_children(children: Sequence[subprocess.Popen[bytes]]) -> None:
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            await asyncio.to_thread(child.wait, 10)
        except subprocess.TimeoutExpired:
            child.kill()
            await asyncio.to_thread(child.wait)
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()


def _read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd`` (unbuffered: what follows stays in the pipe)."""
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise SystemExit("the parent closed the pipe before sending the settings")
        data += chunk
    return bytes(data)


def role_child() -> None:
    """Entry point of a child process (``smtp`` or ``worker``, from argv): settings from
    stdin, then serve that role until SIGTERM/SIGINT or EOF on stdin (the parent is gone)."""
    from kakitome.logs import configure_logging

    role = sys.argv[1] if len(sys.argv) > 1 else "smtp"
    if role not in ("smtp", "worker", "web"):
        raise SystemExit(f"unknown child role {role!r}")
    global _PARENT
    fd = sys.stdin.fileno()
    (size,) = struct.unpack("!Q", _read_exactly(fd, 8))
    settings = pickle.loads(_read_exactly(fd, size))  # trusted: our parent, over a pipe
    assert isinstance(settings, Settings)
    _PARENT = _ParentPipe()
    configure_logging(json=settings.log.format == "json", level=settings.log.level)
    with open(os.devnull, "w") as quiet:
        # (A web child's stdout is its wake-up pipe to the parent: nothing else is printed.)
        coroutine = serve_async(settings, (role,), out=quiet, child=True)
        try:
            import uvloop

            uvloop.run(coroutine)
        except ImportError:
            asyncio.run(coroutine)


class _ParentPipe:
    """A child's stdin, the pipe from its parent: EOF means the parent is gone (stop), a
    byte means it committed new mail (wake the worker). Watched from the moment the child
    has read its settings, so an EOF during a slow start-up is not missed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gone = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wake: Callable[[], None] | None = None
        threading.Thread(target=self._watch, name="parent-watch", daemon=True).start()

    def attach(self, stop: asyncio.Event, wake: Callable[[], None]) -> None:
        """From the running loop: where to send EOF and wake-ups from now on."""
        with self._lock:
            self._loop, self._stop, self._wake = asyncio.get_running_loop(), stop, wake
            if self._gone:
                stop.set()

    def _call(self, stop: bool) -> None:
        with self._lock:
            self._gone = self._gone or stop
            if self._loop is None or self._stop is None or self._wake is None:
                return  # not attached yet: attach() sees _gone
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                self._loop.call_soon_threadsafe(self._stop.set if stop else self._wake)

    def _watch(self) -> None:
        fd = sys.stdin.fileno()
        with contextlib.suppress(OSError, ValueError):
            # os.read returns what is there (a buffered read would wait for 4096 bytes).
            while os.read(fd, 4096):
                self._call(stop=False)
        self._call(stop=True)


_PARENT: _ParentPipe | None = None


def _stop_on_parent_exit(stop: asyncio.Event, store: Database) -> None:
    """Set ``stop`` when the parent is gone; wake the store's worker when the parent
    committed new mail (see _wake_children)."""
    global _PARENT
    if _PARENT is None:
        _PARENT = _ParentPipe()
    _PARENT.attach(stop, store.wake)


def _wake_children(store: Database, children: Sequence[subprocess.Popen[bytes]]) -> None:
    """SQLite has no NOTIFY: after each commit of new work, write a byte down each worker
    child's stdin (non-blocking; wake-ups in one loop turn are coalesced, and a full pipe
    only means the child has wake-ups pending already)."""
    loop = asyncio.get_running_loop()
    pipes = [c.stdin.fileno() for c in children if c.stdin is not None]
    for fd in pipes:
        os.set_blocking(fd, False)
    pending = False

    def send() -> None:
        nonlocal pending
        pending = False
        for fd in pipes:
            with contextlib.suppress(OSError):  # BlockingIOError, BrokenPipeError
                os.write(fd, b"w")

    def committed() -> None:
        nonlocal pending
        if not pending:
            pending = True
            loop.call_soon(send)

    store.add_wake_listener(committed)


async def serve_async(
    settings: Settings,
    roles: Sequence[str] = (),
    *,
    out: TextIO = sys.stdout,
    child: bool = False,
) -> None:
    """Open the process's ``Services`` (``kakitome.services``) and start the roles over
    them; stop them all on SIGTERM/SIGINT."""
    from kakitome.services import open_services

    # The database driver and the write lock answer on threads of their own; with the
    # default 5 ms GIL switch interval each answer waited for the busy event loop to
    # let go of the GIL, and transactions held the write lock that much longer.
    sys.setswitchinterval(SWITCH_INTERVAL)
    active = tuple(roles) or ALL_ROLES
    unknown = set(active) - {"web", "worker", "smtp"}
    if unknown:
        raise SystemExit(f"unknown role(s): {', '.join(sorted(unknown))}")

    services = await open_services(settings, active)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if child:
        _stop_on_parent_exit(stop, services.store)
    run = _Roles(services, stop, out=out, child=child)
    try:
        await run.start(active)
        print("Stop with Ctrl-C (SIGINT) or SIGTERM.", file=out, flush=True)
        await stop.wait()
        await asyncio.gather(*run.tasks, return_exceptions=True)
    finally:
        stop.set()
        await run.close()
        await services.close()


class _Roles:
    """The roles of one ``serve`` process, started over its ``Services``."""

    def __init__(
        self, services: Services, stop: asyncio.Event, *, out: TextIO, child: bool
    ) -> None:
        from kakitome.metrics import DeliveryMetrics

        self.services = services
        self.stop = stop
        self.out = out
        self.child = child
        self.tasks: list[asyncio.Task[None]] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.pool: ConnectionPool | None = None
        self.shaper: Shaper | None = None
        self.shaping_task: asyncio.Task[None] | None = None
        self.inbound: InboundService | None = None
        self.metrics = DeliveryMetrics()
        self.stop_metrics: Callable[[], None] | None = None

    def _task(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=name))

    async def start(self, active: Sequence[str]) -> None:
        services, stop = self.services, self.stop
        self._task(services.live.run(stop), "settings")
        self._task(services.run_refresh(stop), "dkim-keys")
        if "worker" in active:
            await self._start_worker()
        if "web" in active:
            await self._start_web()
        if "smtp" in active:
            await self._start_smtp()
        settings = services.settings
        if settings.scale.metrics_port and "web" not in active:
            from kakitome.metrics import serve_metrics

            port = settings.scale.metrics_port
            host = settings.scale.metrics_host
            self.stop_metrics = serve_metrics(self.metrics.registry, host, port)
            print(f"Metrics: http://{host}:{port}/metrics", file=self.out)

    async def _start_worker(self) -> None:
        from kakitome.campaigns.runner import campaign_task
        from kakitome.delivery.agent import DeliveryAgent
        from kakitome.delivery.pool import ConnectionPool
        from kakitome.delivery.shaping import MemoryShapingState, Shaper, ShapingState
        from kakitome.delivery.shaping_store import ShapingStore
        from kakitome.delivery.tlsrpt_task import tlsrpt_task
        from kakitome.dns.resolver import Resolver
        from kakitome.metrics import DeliveryMetrics
        from kakitome.queue.scheduler import Worker, default_owner
        from kakitome.webhooks.dispatcher import webhook_task

        services, stop, settings, store = (
            self.services,
            self.stop,
            self.services.settings,
            self.services.store,
        )
        worker_here = self.child or settings.scale.worker_processes == 0
        if settings.database.url.startswith("sqlite") and not self.child:
            # One machine: leases left by a process that died are nobody's now (children
            # started below never release: their siblings' leases are live).
            released = await services.queue.release_leases(None)
            if released:
                log.info("released leases left by an earlier process", count=released)
        if not worker_here:
            count = settings.scale.worker_processes
            workers = _start_children(services.base, "worker", count)  # they reload too
            self.children += workers
            if store.dialect != "postgresql":
                _wake_children(store, workers)
            print(f"Delivery: {count} worker processes", file=self.out, flush=True)
            return
        resolver = Resolver(settings.dns)
        self.pool = ConnectionPool(settings)
        owner = default_owner()
        shared: ShapingState = (
            ShapingStore(store) if store.dialect == "postgresql" else MemoryShapingState()
        )
        self.shaper = shaper = Shaper(settings, shared, owner=owner)
        # Not in ``tasks``: it renews slot leases until the pool has closed its
        # connections (in ``close``), then gives back the slots.
        self.shaping_task = asyncio.create_task(shaper.run(), name="shaping")
        self.metrics = DeliveryMetrics(shaper.site_of_host)
        self.metrics.watch_shaping(shaper.status)
        agent = DeliveryAgent(
            settings, resolver, self.pool, tls_state=services.delivery_tls_state, shaping=shaper
        )
        services.live.subscribe(follow_settings(agent))
        self._task(tlsrpt_task(services, resolver, stop), "tlsrpt")
        worker = Worker(
            settings,
            services.queue,
            agent.deliver,
            injector=services.injector,
            owner=owner,
            suppressed=services.inbound_store.suppressed_among,
            metrics=self.metrics,
        )
        self._task(worker.run(stop), "worker")
        self._task(services.domains.run_periodic(stop), "domain-verify")
        self._task(campaign_task(services, stop), "campaigns")
        self._task(webhook_task(store, settings, stop), "webhooks")

    async def _start_web(self) -> None:
        from kakitome.web.app import create_app
        from kakitome.web.ui import ensure_first_admin
        from kakitome.web.urls import public_url

        services, stop, settings, base = (
            self.services,
            self.stop,
            self.services.settings,
            self.services.base,
        )
        app = create_app(services)
        app.state.process_metrics = self.metrics.registry  # served by /metrics
        server = _quiet_server_class()(_uvicorn_config(app, settings))
        # Several web processes share the port (SO_REUSEPORT), bound here and handed
        # to uvicorn; one process lets uvicorn bind as usual.
        # The parent's socket is only bound until its web children serve: connections
        # made before (kept alive by their clients) would all stay with the parent.
        reuse_port = settings.http.processes > 1 or self.child
        host, port = settings.http.host, settings.http.port
        sockets = [_reuseport_socket(host, port, listen=self.child)] if reuse_port else None
        children_ready: asyncio.Future[None] | None = None

        async def run_web() -> None:
            if children_ready is not None and sockets:
                try:
                    await asyncio.wait_for(children_ready, WEB_CHILDREN_START_TIMEOUT)
                except TimeoutError:
                    log.warning("web children not serving yet; opening the listener")
                sockets[0].listen(LISTEN_BACKLOG)
            web = asyncio.create_task(server.serve(sockets=sockets))
            await stop.wait()
            server.should_exit = True
            await web

        if not self.child:
            # The first key and login are made before the listener opens: once /healthz
            # answers, start-up is over, and a database outage after that cannot end it.
            print(f"Kakitome is running: {public_url(settings)}/", file=self.out, flush=True)
            await ensure_first_api_key(services.api_keys, self.out)
            await ensure_first_admin(services.web_store, self.out)
        else:
            self.tasks.append(_tell_parent(services.store, server))
        if sockets and not self.child:
            port = sockets[0].getsockname()[1]
            http = base.http.model_copy(update={"processes": 1, "port": port})
            web_children = _start_children(
                base.model_copy(update={"http": http}),
                "web",
                settings.http.processes - 1,
                stdout=True,
            )
            self.children += web_children
            children_ready = _listen_to_children(services.store, web_children)
        self._task(run_web(), "web")

    async def _start_smtp(self) -> None:
        from kakitome.inbound.server import InboundService

        settings = self.services.settings
        # SMTP children do not forward: the parent's forwarder forwards for all.
        self.inbound = inbound = InboundService(
            self.services, follow_settings=False, forward=not self.child
        )
        await inbound.start()
        if not self.child and settings.inbound.processes > 1:
            self.children += _start_smtp_children(self.services.base, inbound.ports)
        ports = ", ".join(f"{name} {port}" for name, port in inbound.ports.items())
        print(f"SMTP listeners: {ports or 'none'}", file=self.out, flush=True)

    async def close(self) -> None:
        if self.children:
            await _stop_children(self.children)
        if self.inbound is not None:
            await self.inbound.stop()
        for task in self.tasks:
            if not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.pool is not None:
            await self.pool.aclose()
        if self.shaper is not None:
            await self.shaper.close()
        if self.shaping_task is not None:
            await self.shaping_task
        if self.stop_metrics is not None:
            self.stop_metrics()


# How long an idle HTTP connection is kept. uvicorn's 5 s equals httpx's (and many
# clients') own idle expiry, so both ends closed idle connections at the same moment and
# a client sometimes sent a request on one the server was closing: httpx.ReadError, a
# message neither accepted nor refused (seen in the durability test and the benchmark on
# a busy machine). Longer than the clients' expiry, the client always closes first
# (nginx keeps 75 s).
KEEP_ALIVE_TIMEOUT = 65


def _uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
    )


def serve(settings: Settings, roles: Sequence[str] = ()) -> None:
    """Run until SIGTERM/SIGINT. Uses uvloop when it is installed."""
    from kakitome.logs import configure_logging

    configure_logging(json=settings.log.format == "json", level=settings.log.level)
    try:
        import uvloop

        uvloop.run(serve_async(settings, roles))
    except ImportError:
        asyncio.run(serve_async(settings, roles))
