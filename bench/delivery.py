"""The delivery benchmark (issue 2, issue 9): Kakitome and Postfix, same load, same sink.

The load: ``--messages`` (20,000; ``--quick``: 2,000) messages of 2-5 KB (sizes drawn
uniformly; MIME text, a third of them multipart/alternative with HTML, Japanese and English
text, UTF-8 encoded names and subjects), one recipient each, spread over 20 domains
``d1.bench.test`` ... ``d20.bench.test``.

The sink: ``bench.sink serve`` in a process of its own - DNS for the domains, a test CA,
and ``--peers`` MX peers on 127.0.0.10+ that offer STARTTLS with valid certificates and
count connections, TLS handshakes and messages. Its ceiling is measured first in the same
run with ``bench.sink blast`` (another process): a raw client pipelining MAIL/RCPT/DATA over
a few reused TLS connections, and a client that opens a TLS connection per message.

Kakitome: ``python -m kakitome serve`` (web + worker roles, one process) on a fresh SQLite
database in a temporary folder (or a fresh PostgreSQL database made on the server of
``--database-url``), pointed at the sink's DNS, port and CA. Injection:

- ``--inject http`` (default, comparable with Postfix's SMTP injection): ``--clients``
  concurrent HTTP clients ``POST /api/v1/messages`` (202 once committed);
- ``--inject direct``: ``QueueStore.inject_many`` straight into the database before the service
  starts (pure delivery rate; the clock starts when the worker says it started).

The clock stops when the database holds a delivered receipt for every message (the sink's
count is polled first, then the database). CPU seconds are the service process's own
(utime + stime, children included, from /proc); peak memory is the sum of its processes'
VmHWM. The injecting clients' CPU is reported apart, like smtp-source's for Postfix.
"CPU ms/msg" is also CPU seconds per 1,000 messages.

Postfix: ``bench.postfix_relay.run_postfix_relay`` relays the same number of messages (of
the mean size Kakitome sent) to the same sink peers, once with its defaults and once with
``smtp_tls_connection_reuse = yes``; the ratios Kakitome / Postfix are printed. Postfix's
peak memory is the largest sum of its processes' resident memory, sampled every 0.2 s
(its delivery processes come and go).

Talks to nothing outside 127.0.0.0/8. Needs root for Postfix (``--systems kakitome`` runs
without it). ``--py-spy FILE`` profiles the service with py-spy during the run (slows it:
use a separate run for the figures) and prints the top functions; each child process
goes to ``FILE.worker<n>``; ``BENCH_PY_SPY_IDLE=1`` samples waiting threads too (where a
process waits, not only where it works), ``BENCH_PY_SPY_NATIVE=1`` native frames.

    python -m bench.delivery                     # full run, human table
    python -m bench.delivery --quick --json      # smoke check, one JSON document
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench.sink import bench_domain, cpu_seconds
from kakitome.queue.store import QueueStore

DOMAINS = 20
FULL = 20_000
QUICK = 2_000
SENDER = "news@sender.bench.test"
_KEY = re.compile(r"API key \(shown once, keep it\): (\S+)")
# ``python -m kakitome serve``, except that it binds ``uvicorn`` in kakitome.runtime when
# that module only imports it for type checking (commit 6b9d3bf: serve_async then fails
# with NameError). Does nothing once runtime.py imports uvicorn where it uses it.
_SERVE = (
    "import sys, kakitome.runtime as runtime\n"
    "if not hasattr(runtime, 'uvicorn'):\n"
    "    import uvicorn\n"
    "    runtime.uvicorn = uvicorn\n"
    "from kakitome.cli.main import main\n"
    "sys.argv = ['kakitome', 'serve', *sys.argv[1:]]\n"
    "main()\n"
)

# -- the load ------------------------------------------------------------------------------

_JA = [
    "いつも{shop}をご利用いただき、誠にありがとうございます。",
    "今月のおすすめ商品と、会員様限定のキャンペーンをご案内いたします。",
    "冬の新作コレクションが入荷しました。数量限定のため、お早めにお求めください。",
    "配送料は全国一律無料です（一部地域を除く）。",
    "このメールは配信専用アドレスから送信されています。ご返信いただいてもお答えできません。",
    "ポイントの有効期限が近づいております。マイページからご確認ください。",
    "年末年始の営業日についてお知らせいたします。",
    "お問い合わせはカスタマーサポート（平日10時〜18時）までお願いいたします。",
]
_EN = [
    "Thank you for reading the {shop} newsletter.",
    "This month we look back at the year and forward to the winter collection.",
    "Members get free shipping on every order until the end of the month.",
    "If you no longer wish to receive these messages, use the unsubscribe link below.",
    "Our support team answers on weekdays from 10:00 to 18:00 JST.",
    "Read the full story on our blog, with photographs from the Kyoto workshop.",
]
_SURNAMES = ["山田", "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "中村", "小林", "加藤"]
_SHOPS = ["書留ストア", "さくら商店", "Kakitome Market", "青空書房"]


def _paragraphs(rng: random.Random, budget: int, shop: str) -> str:
    """Japanese and English sentences until ``budget`` UTF-8 bytes are reached."""
    lines: list[str] = []
    used = 0
    while True:
        pool = _JA if rng.random() < 0.65 else _EN
        line = rng.choice(pool).format(shop=shop)
        size = len(line.encode()) + 1
        if lines and used + size > budget:
            return "\n".join(lines)
        lines.append(line)
        used += size
        if rng.random() < 0.2:
            lines.append("")


def message_fields(
    number: int, domains: int, seed: int = 2026, *, signed: bool = True
) -> dict[str, Any]:
    """The API fields of message ``number``: 2-5 KB once built (base64 UTF-8 bodies; some
    quoted-printable, which Python's email package picks when the first lines are mostly
    ASCII, come out larger), DKIM signatures included when ``signed``."""
    rng = random.Random(seed * 1_000_003 + number)
    target = rng.randint(2_000, 5_000)
    shop = rng.choice(_SHOPS)
    name = rng.choice(_SURNAMES)
    multipart = rng.random() < 1 / 3
    # Base64 turns 57 bytes into a 78-byte line; the header takes about 420 bytes and the
    # multipart structure about 300 more.
    overhead = (720 if multipart else 420) + (900 if signed else 0)
    raw = max(200, (target - overhead) * 57 // 78)
    greeting = f"{name}様\n\n"
    fields: dict[str, Any] = {
        "from": f"{shop} <{SENDER}>",
        "to": [f"{name} <user{number}@{bench_domain(number % domains + 1)}>"],
        "subject": f"【{shop}】12月のお知らせ No.{number}",
        "headers": {"X-Bench-Seq": str(number)},
    }
    if multipart:
        text = greeting + _paragraphs(rng, raw * 45 // 100, shop)
        body = "".join(f"<p>{line}</p>\n" for line in text.split("\n") if line)
        fields["text"] = text
        fields["html"] = f"<html><body>\n{body}</body></html>"
    else:
        fields["text"] = greeting + _paragraphs(rng, raw, shop)
    return fields


# -- processes -----------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``, reaped children included."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[13])) / tick, (int(fields[12]) + int(fields[14])) / tick


def child_pids(pid: int) -> list[int]:
    """The PIDs of ``pid``'s children (Linux: /proc/PID/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return sorted(found)


def peak_memory_mb(pid: int) -> float:
    """VmHWM (peak resident set) of ``pid`` in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sink:
    """``bench.sink serve`` as a subprocess, asked for its counters over a pipe."""

    def __init__(self, domains: int, peers: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", "serve", "--domains", str(domains),
             "--peers", str(peers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        hello = self._read()
        self.pid: int = hello["pid"]
        self.env: dict[str, str] = hello["env"]
        self.peers: list[str] = hello["peers"]
        self.mx_names: dict[str, str] = hello["mx_names"]
        self.ca_file: str = hello["ca_file"]
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the sink process ended")
        data: dict[str, Any] = json.loads(line)
        return data

    def stats(self) -> dict[str, Any]:
        """Totals over the peers, and the sink process's CPU seconds."""
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write("stats\n")
            self.proc.stdin.flush()
            data = self._read()
        totals: Counter[str] = Counter()
        for peer in data["peers"].values():
            totals.update({k: v for k, v in peer.items() if k != "max_pipeline"})
        return {**totals, "cpu_seconds": data["cpu_seconds"]}

    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for peer in self.peers:
            host, _, port = peer.rpartition(":")
            out.append((host, int(port)))
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def sink_ceiling(sink: Sink, *, seconds: float, connections: int, size: int,
                 new_connection_each: bool) -> dict[str, Any]:
    """Run ``bench.sink blast`` against the first peer; its JSON result plus sink CPU."""
    peer = sink.peers[0]
    before = sink.stats()["cpu_seconds"]
    args = [sys.executable, "-m", "bench.sink", "blast", peer, "--ca-file", sink.ca_file,
            "--server-name", sink.mx_names[peer], "--seconds", str(seconds),
            "--connections", str(connections), "--size", str(size)]
    if new_connection_each:
        args.append("--new-connection-each")
    done = subprocess.run(args, capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    result: dict[str, Any] = json.loads(done.stdout)
    result["sink_cpu_seconds"] = round(sink.stats()["cpu_seconds"] - before, 2)
    return result


class Service:
    """``python -m kakitome serve`` with an environment; output lines kept with times."""

    def __init__(self, env: dict[str, str], workdir: Path, workers: int = 1) -> None:
        self.env = env
        self.workers = workers  # "worker started" lines to wait for (children log them)
        self.started_workers = 0
        self.port = int(env["KAKITOME_HTTP__PORT"])
        self.workdir = workdir
        self.lines: list[tuple[float, str]] = []
        self.api_key: str | None = None
        self.worker_started: float | None = None
        self.worker_started_cpu = 0.0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        import httpx

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE],
            cwd=self.workdir, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("kakitome serve exited early:\n" + self.log())
            if self.api_key and self.started_workers >= self.workers:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                        return
            time.sleep(0.05)
        raise RuntimeError("kakitome serve did not start:\n" + self.log())

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            now = time.monotonic()
            if len(self.lines) < 10_000:
                self.lines.append((now, line))
            if "worker started" in line:
                self.started_workers += 1
            if self.worker_started is None and "worker started" in line:
                self.worker_started = now
                if self.proc is not None:
                    with contextlib.suppress(OSError):
                        self.worker_started_cpu = cpu_seconds(self.proc.pid)
            match = _KEY.search(line)
            if match:
                self.api_key = match.group(1)

    def log(self) -> str:
        return "".join(line for _, line in self.lines)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# -- results -------------------------------------------------------------------------------


@dataclass
class SystemResult:
    """One system's run, in the same units for Kakitome and Postfix."""

    system: str
    messages: int
    delivered: int
    seconds: float
    messages_per_second: float
    cpu_seconds: float
    cpu_ms_per_message: float
    peak_memory_mb: float | None
    sink_messages: int
    sink_connections: int
    sink_tls_handshakes: int
    messages_per_connection: float
    sink_cpu_seconds: float
    load_average: tuple[float, float]  # 1-minute load at start and at end
    extra: dict[str, Any] = field(default_factory=dict)


def _loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def _sink_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {key: after[key] - before.get(key, 0) for key in after}


# -- Kakitome ------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(url: str | None, folder: Path) -> Iterator[str]:
    """A SQLite file in ``folder``, or a new PostgreSQL database on ``url``'s server
    (dropped afterwards)."""
    if url is None or url.startswith("sqlite"):
        yield url or f"sqlite:///{folder / 'kakitome.db'}"
        return
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = f"kakitome_bench_{secrets.token_hex(4)}"
    admin = parsed.set(drivername="postgresql").render_as_string(hide_password=False)

    async def execute(statement: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _inject_direct(url: str, count: int, domains: int) -> None:
    from kakitome.config import load_settings
    from kakitome.injection import Injector
    from kakitome.store.database import Database

    store = await Database.open(url)
    try:
        injector = Injector(QueueStore(store), load_settings(environ={}))
        chunk = []
        for number in range(count):
            fields = message_fields(number, domains, signed=False)
            chunk.append(
                injector.prepare_fields(
                    from_=fields["from"], to=fields["to"], subject=fields["subject"],
                    text=fields.get("text"), html=fields.get("html"),
                    headers=fields["headers"], source="api",
                )
            )
            if len(chunk) == 500:
                await injector.submit_many(chunk)
                chunk = []
        if chunk:
            await injector.submit_many(chunk)
    finally:
        await store.close()


async def _inject_http(
    url: str, key: str, count: int, domains: int, clients: int, *, signed: bool
) -> None:
    import httpx

    bodies = iter([message_fields(n, domains, signed=signed) for n in range(count)])
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=60, limits=limits) as client:

        async def one_client() -> None:
            for body in bodies:
                response = await client.post("/api/v1/messages", json=body)
                if response.status_code != 202:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")

        await asyncio.gather(*(one_client() for _ in range(clients)))


async def _inject_batches(
    url: str, key: str, count: int, domains: int, clients: int, size: int, *, signed: bool
) -> None:
    """``clients`` concurrent clients, each POSTing ``size`` messages a request to
    ``/api/v1/messages/batch``."""
    import httpx

    bodies = [message_fields(n, domains, signed=signed) for n in range(count)]
    batches = iter([bodies[i : i + size] for i in range(0, count, size)])
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=120, limits=limits) as client:

        async def one_client() -> None:
            for batch in batches:
                response = await client.post("/api/v1/messages/batch", json={"messages": batch})
                if response.status_code != 202:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")

        await asyncio.gather(*(one_client() for _ in range(clients)))


async def _wait_delivered(url: str, sink: Sink, sink_base: int, count: int,
                          limit_seconds: float) -> dict[str, int]:
    """Poll the sink until it has ``count`` new messages, then the database until every
    delivery is final; return the status counts."""
    from kakitome.store.database import Database

    deadline = time.monotonic() + limit_seconds
    while sink.stats()["messages"] - sink_base < count:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    store = await Database.open(url, migrate=False)
    try:
        while True:
            counts = await QueueStore(store).status_counts()
            if counts.get("delivered", 0) + counts.get("bounced", 0) >= count:
                return counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every message was delivered in time: {counts}")
            await asyncio.sleep(0.05)
    finally:
        await store.close()


async def _message_sizes(url: str) -> dict[str, float]:
    from sqlalchemy import text

    from kakitome.store.database import Database

    store = await Database.open(url, migrate=False)
    try:
        async with store.engine.connect() as conn:
            row = (await conn.execute(text(
                "SELECT min(size), avg(size), max(size) FROM messages WHERE source = 'api'"
            ))).one()
    finally:
        await store.close()
    return {"min": int(row[0] or 0), "mean": round(float(row[1] or 0)), "max": int(row[2] or 0)}


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed (pip install py-spy into the venv)")
    return found


def run_kakitome(sink: Sink, args: argparse.Namespace) -> SystemResult:
    folder = Path(tempfile.mkdtemp(prefix="kakitome-bench-"))
    try:
        with fresh_database(args.database_url, folder) as url:
            return _run_kakitome(sink, args, folder, url)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_kakitome(sink: Sink, args: argparse.Namespace, folder: Path, url: str) -> SystemResult:
    count = args.messages
    settings_env = {
        "KAKITOME_DATABASE__URL": url,
        "KAKITOME_HTTP__PORT": str(free_port()),
        "KAKITOME_PATHS__DATA_DIR": str(folder / "var"),
        "KAKITOME_DELIVERY__HELO_HOSTNAME": "kakitome.bench.test",
        # Nothing should be deferred; if something is, retry it soon, not in 5 minutes.
        "KAKITOME_QUEUE__RETRY_FIRST": "2",
        # The SMTP listeners (25/587/465) play no part here, and a port taken by anything
        # else on the machine would stop the service: off.
        "KAKITOME_INBOUND__MX_PORT": "0",
        "KAKITOME_INBOUND__SUBMISSION_PORT": "0",
        "KAKITOME_INBOUND__SUBMISSIONS_PORT": "0",
    }
    if args.batch_size:
        settings_env["KAKITOME_QUEUE__BATCH_SIZE"] = str(args.batch_size)
    if args.per_destination_concurrency:
        settings_env["KAKITOME_DELIVERY__PER_DESTINATION_CONCURRENCY"] = str(
            args.per_destination_concurrency)
    if args.messages_per_connection:
        settings_env["KAKITOME_DELIVERY__MESSAGES_PER_CONNECTION"] = str(
            args.messages_per_connection)
    for item in args.env:
        key, _, value = item.partition("=")
        settings_env[key] = value
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAKITOME_")}
    env.update(sink.env)
    env.update(settings_env)

    if args.unsigned:
        settings_env["KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM"] = "true"
        env["KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM"] = "true"
    else:
        # A sending domain with its DKIM keys (RSA-2048 and Ed25519): the API signs both.
        subprocess.run(
            [sys.executable, "-m", "kakitome", "domain", "add", SENDER.partition("@")[2],
             "--json"],
            cwd=folder, env=env, check=True, capture_output=True, text=True,
        )
    prepare_seconds = 0.0
    if args.inject == "direct":
        started_prep = time.monotonic()
        asyncio.run(_inject_direct(url, count, args.domains))
        prepare_seconds = time.monotonic() - started_prep

    sink_before = sink.stats()
    # One process with every role; with --workers N it runs the worker role in N child
    # processes (scale.worker_processes) and CPU and memory are summed over all of them.
    if args.workers:
        env["KAKITOME_SCALE__WORKER_PROCESSES"] = str(args.workers)
        settings_env["KAKITOME_SCALE__WORKER_PROCESSES"] = str(args.workers)
    service = Service(env, folder, workers=max(1, args.workers))
    profilers: list[subprocess.Popen[bytes]] = []
    load_start = _loadavg()
    try:
        service.start()
        pids = [service.pid, *child_pids(service.pid)]
        cpu_starts = [cpu_seconds(pid) for pid in pids]
        if args.workers and args.inject == "direct":
            # The children delivered from their start: all their CPU counts.
            cpu_starts[1:] = [0.0] * (len(pids) - 1)
        cpu_start = sum(cpu_starts)
        if args.py_spy:
            # The serve process into FILE, its worker children into FILE.worker1, ...
            for index, pid in enumerate(pids):
                name = f".worker{index}" if index else ""
                profilers.append(subprocess.Popen(
                    [_py_spy(), "record", "--pid", str(pid), "--rate", "200",
                     *(["--native"] if os.environ.get("BENCH_PY_SPY_NATIVE") else []),
                     *(["--idle"] if os.environ.get("BENCH_PY_SPY_IDLE") else []),
                     "--format", "raw", "--output", f"{args.py_spy}{name}", "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))
        harness_cpu = time.process_time()
        if args.inject == "direct":
            assert service.worker_started is not None
            started = service.worker_started
            if not args.workers:
                # The worker began before start() returned: its CPU counts from then.
                cpu_start = service.worker_started_cpu
        else:
            started = time.monotonic()

        injected: list[float] = []

        async def drive() -> dict[str, int]:
            assert service.api_key is not None or args.inject == "direct"
            if args.inject == "http":
                assert service.api_key is not None
                await _inject_http(service.url, service.api_key, count, args.domains,
                                   args.clients, signed=not args.unsigned)
            elif args.inject == "batch":
                assert service.api_key is not None
                await _inject_batches(service.url, service.api_key, count, args.domains,
                                      args.clients, args.batch_messages,
                                      signed=not args.unsigned)
            injected.append(time.monotonic())
            return await _wait_delivered(url, sink, sink_before["messages"], count,
                                         args.timeout)

        try:
            counts = asyncio.run(drive())
        except Exception:
            # The service's own words say why (it may have exited): show its last lines.
            print("kakitome serve output (last 40 lines):\n"
                  + "".join(line for _, line in service.lines[-40:]), file=sys.stderr)
            raise
        finished = time.monotonic()
        cpu_each = [cpu_seconds(pid) for pid in pids]
        cpu = sum(cpu_each) - cpu_start
        splits = [cpu_split(pid) for pid in pids]
        user, system = sum(u for u, _ in splits), sum(t for _, t in splits)
        peak = sum(peak_memory_mb(pid) for pid in pids)
        harness_cpu = time.process_time() - harness_cpu
        sink_after = sink.stats()
    finally:
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
        for profiler in profilers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.wait(30)
        service.stop()
    sizes = asyncio.run(_message_sizes(url))
    seconds = finished - started
    delta = _sink_delta(sink_before, sink_after)
    return SystemResult(
        system=f"Kakitome ({args.inject}"
        + (f", {args.workers} worker process{'es' * (args.workers > 1)}" if args.workers else "")
        + ")",
        messages=count,
        delivered=counts.get("delivered", 0),
        seconds=round(seconds, 2),
        messages_per_second=round(count / seconds, 1),
        cpu_seconds=round(cpu, 2),
        cpu_ms_per_message=round(cpu * 1000 / count, 3),
        peak_memory_mb=round(peak, 1),
        sink_messages=delta["messages"],
        sink_connections=delta["connections"],
        sink_tls_handshakes=delta["tls_handshakes"],
        messages_per_connection=round(delta["messages"] / max(1, delta["connections"]), 1),
        sink_cpu_seconds=round(delta["cpu_seconds"], 2),
        load_average=(load_start, _loadavg()),
        extra={
            "database": url.split(":")[0],
            "status_counts": counts,
            "message_sizes": sizes,
            "injection": args.inject,
            "dkim": "rsa-sha256 + ed25519-sha256" if args.inject != "direct"
            and not args.unsigned else "none",
            "http_clients": args.clients if args.inject != "direct" else None,
            "messages_per_request": args.batch_messages if args.inject == "batch" else 1,
            "processes": f"serve + {args.workers} worker children" if args.workers
            else "one (all roles)",
            "injector_cpu_seconds": round(harness_cpu, 2) if args.inject != "direct" else None,
            "direct_prepare_seconds": round(prepare_seconds, 2) or None,
            "injection_seconds": round(injected[0] - started, 2) if injected else None,
            "settings": {k: v for k, v in settings_env.items()
                         if k not in ("KAKITOME_DATABASE__URL", "KAKITOME_PATHS__DATA_DIR",
                                      "KAKITOME_HTTP__PORT")},
            "tls_failures": delta["tls_failures"],
            "process_cpu_user_system": [round(user, 2), round(system, 2)],
            # CPU seconds of each process over the run (serve first, then its worker
            # children; theirs counted from their start with --inject direct).
            "process_cpu_seconds": [
                round(end - begin, 2) for end, begin in zip(cpu_each, cpu_starts, strict=True)
            ],
        },
    )


# -- Postfix -------------------------------------------------------------------------------


def run_postfix(sink: Sink, args: argparse.Namespace, *, reuse: bool, size: int) -> SystemResult:
    from bench.postfix_relay import run_postfix_relay

    sink_before = sink.stats()
    load_start = _loadavg()
    relay = run_postfix_relay(
        sink.addresses(),
        messages=args.messages,
        message_size=size,
        domains=args.domains,
        sessions=args.postfix_sessions,
        connection_reuse=reuse,
        ca_file=Path(sink.ca_file),
        listen=("127.0.0.9", free_port("127.0.0.9")),
        timeout=args.timeout,
    )
    delta = _sink_delta(sink_before, sink.stats())
    return SystemResult(
        system="Postfix (reuse)" if reuse else "Postfix (defaults)",
        messages=relay.messages,
        delivered=relay.delivered,
        seconds=relay.seconds,
        messages_per_second=relay.messages_per_second,
        cpu_seconds=relay.cpu_seconds,
        cpu_ms_per_message=relay.cpu_ms_per_message,
        peak_memory_mb=relay.peak_memory_mb,
        sink_messages=delta["messages"],
        sink_connections=delta["connections"],
        sink_tls_handshakes=delta["tls_handshakes"],
        messages_per_connection=round(delta["messages"] / max(1, delta["connections"]), 1),
        sink_cpu_seconds=round(delta["cpu_seconds"], 2),
        load_average=(load_start, _loadavg()),
        extra={
            "message_size": size,
            "relay_tls_handshakes": relay.tls_handshakes,
            "relay_tls_reused": relay.tls_reused,
            "deferred_or_bounced": relay.deferred_or_bounced,
            "smtp_source_sessions": relay.injectors * relay.sessions_per_injector,
        },
    )


# -- profile -------------------------------------------------------------------------------


# Leaf frames that are waits, not work: aiosqlite's worker thread blocked on its queue, and
# the event loop's run call (uvloop is C: its own I/O and TLS work also land on this frame,
# so what it hides is reported apart as "event loop (uvloop C code or idle)").
_IDLE_LEAVES = ("_connection_worker_thread (aiosqlite/core.py:59)",)
_LOOP_LEAF = "Runner.run (asyncio/runners.py:"


def top_functions(collapsed: Path, limit: int = 15) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's raw (collapsed) output: the functions with the largest share of the
    busy samples (idle waits left out), by own time (the frame on top) and by total time
    (anywhere on the stack; only Kakitome's own functions below the entry point)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = busy = loop = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        weight = int(number)
        samples += weight
        frames = [f for f in (_short(frame) for frame in stack.split(";")) if f]
        if not frames or frames[-1] in _IDLE_LEAVES:
            continue
        if frames[-1].startswith(_LOOP_LEAF):
            loop += weight
            continue
        busy += weight
        own[_function(frames[-1])] += weight
        for frame in {_function(f) for f in frames}:
            total[frame] += weight
    if not busy:
        return {"own": [], "total": []}
    ours = Counter({name: n for name, n in total.items() if "kakitome/" in name
                    and not name.startswith(("main ", "serve ", "Security", "BodySize"))})

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / busy, 1)) for name, n in counter.most_common(limit)]

    return {
        "own": share(own),
        "total": share(ours),
        "samples": [("all", samples), ("busy", busy), ("event loop (uvloop C or idle)", loop)],
    }


def _function(frame: str) -> str:
    """``func (kakitome/x.py:12)`` -> ``func (kakitome/x.py)``: one entry per function."""
    return re.sub(r":\d+\)$", ")", frame)


def _short(frame: str) -> str:
    """``func (path/to/kakitome/x.py:12)`` -> ``func (kakitome/x.py:12)``."""
    match = re.match(r"(.*) \((.*?):(\d+)\)$", frame.strip())
    if not match:
        return frame.strip() if not frame.startswith("process ") else ""
    name, path, lineno = match.groups()
    for marker in ("/site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path}:{lineno})"


# -- output --------------------------------------------------------------------------------


def ratios(kakitome: SystemResult, postfix: SystemResult) -> dict[str, float]:
    found = {
        "messages_per_second": round(kakitome.messages_per_second
                                     / postfix.messages_per_second, 2),
        "cpu_per_message": round(kakitome.cpu_ms_per_message / postfix.cpu_ms_per_message, 2),
    }
    if kakitome.peak_memory_mb and postfix.peak_memory_mb:
        found["peak_memory"] = round(kakitome.peak_memory_mb / postfix.peak_memory_mb, 2)
    return found


def print_table(report: dict[str, Any], out: TextIO = sys.stdout) -> None:
    write = out.write
    meta = report["run"]
    write(f"Delivery benchmark, {meta['date']}, {meta['cpus']} CPUs, load average "
          f"{meta['load_average_start']} at start, {meta['load_average_end']} at end\n")
    write(f"{meta['messages']} messages to {meta['domains']} domains, STARTTLS, sink: "
          f"{meta['sink_peers']} peer(s) in one separate process\n\n")
    for name, ceiling in report["sink_ceiling"].items():
        write(f"Sink ceiling ({name}): {ceiling['messages_per_second']:.0f} messages/s over "
              f"{ceiling['connections']} connection(s), {ceiling['tls_handshakes']} TLS "
              f"handshakes, sink CPU {ceiling['sink_cpu_seconds']} s in "
              f"{ceiling['seconds']} s\n")
    write("\n")
    head = ("system", "msgs/s", "seconds", "CPU s", "CPU s/1k msgs", "peak MB", "TLS sess",
            "msgs/conn", "sink CPU s", "load")
    rows = [head]
    for result in report["results"]:
        peak = result["peak_memory_mb"]
        rows.append((
            result["system"],
            f"{result['messages_per_second']:.1f}",
            f"{result['seconds']:.1f}",
            f"{result['cpu_seconds']:.1f}",
            f"{result['cpu_ms_per_message']:.2f}",
            "-" if peak is None else f"{peak:.0f}",
            str(result["sink_tls_handshakes"]),
            f"{result['messages_per_connection']:.1f}",
            f"{result['sink_cpu_seconds']:.1f}",
            "{}/{}".format(*result["load_average"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for index, row in enumerate(rows):
        write("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                        for i, cell in enumerate(row)) + "\n")
        if index == 0:
            write("  ".join("-" * w for w in widths) + "\n")
    for result in report["results"]:
        if result["system"].startswith("Kakitome"):
            extra = result["extra"]
            write(f"\nKakitome: {result['delivered']} delivered ({extra['status_counts']}); "
                  f"message sizes {extra['message_sizes']}; process CPU user/system "
                  f"{extra['process_cpu_user_system']} s; injector CPU "
                  f"{extra['injector_cpu_seconds']} s; settings {extra['settings']}\n")
    for name, values in report["ratios"].items():
        memory = (f", {values['peak_memory']}x peak memory" if "peak_memory" in values
                  else "")
        write(f"Kakitome / {name}: {values['messages_per_second']}x messages/s, "
              f"{values['cpu_per_message']}x CPU per message{memory}\n")
    if report.get("profile"):
        counts = dict(report["profile"].get("samples", []))
        write(f"\nProfile (py-spy, share of {counts.get('busy')} busy samples; "
              f"{counts.get('event loop (uvloop C or idle)')} more on the event loop's C "
              f"code or idle):\n")
        for kind in ("own", "total"):
            label = "own" if kind == "own" else "total (kakitome functions)"
            write(f"  by {label} time:\n")
            for name, share in report["profile"][kind]:
                write(f"    {share:5.1f}%  {name}\n")


# -- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=FULL)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK} messages")
    parser.add_argument("--domains", type=int, default=DOMAINS)
    parser.add_argument("--peers", type=int, default=2, help="MX peers in the sink process")
    parser.add_argument("--systems", default="kakitome,postfix,postfix-reuse",
                        help="comma-separated: kakitome, postfix, postfix-reuse")
    parser.add_argument("--inject", choices=("http", "batch", "direct"), default="http")
    parser.add_argument("--batch-messages", type=int, default=100,
                        help="messages per request with --inject batch")
    parser.add_argument("--workers", type=int, default=0,
                        help="0: one process with every role; N: serve with "
                             "scale.worker_processes = N (N worker child processes)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients")
    parser.add_argument("--unsigned", action="store_true",
                        help="no sending domain (domains.allow_unconfigured_from): no DKIM")
    parser.add_argument("--database-url", help="postgresql://... (a fresh database is made "
                        "on that server); default: SQLite in a temporary folder")
    parser.add_argument("--batch-size", type=int, help="KAKITOME_QUEUE__BATCH_SIZE")
    parser.add_argument("--per-destination-concurrency", type=int,
                        help="KAKITOME_DELIVERY__PER_DESTINATION_CONCURRENCY")
    parser.add_argument("--messages-per-connection", type=int,
                        help="KAKITOME_DELIVERY__MESSAGES_PER_CONNECTION")
    parser.add_argument("--env", action="append", default=[], metavar="KAKITOME_X__Y=V",
                        help="another setting for the service (repeatable)")
    parser.add_argument("--postfix-sessions", type=int, default=20,
                        help="concurrent smtp-source sessions in all")
    parser.add_argument("--ceiling-seconds", type=float, default=4.0)
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--py-spy", type=Path, metavar="FILE",
                        help="profile Kakitome with py-spy into FILE (collapsed stacks)")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = QUICK
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - {"kakitome", "postfix", "postfix-reuse"}
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    # A plain kill must still stop the service, the sink and Postfix (finally blocks).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    report: dict[str, Any] = {
        "run": {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "cpus": os.cpu_count(),
            "messages": args.messages,
            "domains": args.domains,
            "sink_peers": args.peers,
            "command": " ".join(sys.argv),
            "load_average_start": [round(x, 2) for x in os.getloadavg()],
        },
        "sink_ceiling": {},
        "results": [],
        "ratios": {},
    }
    progress = sys.stderr
    sink = Sink(args.domains, args.peers)
    try:
        if not args.no_ceiling:
            progress.write("measuring the sink's ceiling...\n")
            report["sink_ceiling"]["pipelined, reused TLS connections"] = sink_ceiling(
                sink, seconds=args.ceiling_seconds, connections=4, size=3500,
                new_connection_each=False)
            report["sink_ceiling"]["a new TLS connection per message"] = sink_ceiling(
                sink, seconds=args.ceiling_seconds, connections=4, size=3500,
                new_connection_each=True)
        kakitome: SystemResult | None = None
        size = 3500
        if "kakitome" in systems:
            progress.write(f"Kakitome: {args.messages} messages ({args.inject})...\n")
            kakitome = run_kakitome(sink, args)
            report["results"].append(asdict(kakitome))
            size = int(kakitome.extra["message_sizes"]["mean"]) or size
        for name, reuse in (("postfix", False), ("postfix-reuse", True)):
            if name not in systems:
                continue
            progress.write(f"Postfix ({'reuse' if reuse else 'defaults'}): "
                           f"{args.messages} messages of {size} bytes...\n")
            postfix = run_postfix(sink, args, reuse=reuse, size=size)
            report["results"].append(asdict(postfix))
            if kakitome is not None:
                report["ratios"][postfix.system] = ratios(kakitome, postfix)
    finally:
        sink.close()
    report["run"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.py_spy and args.py_spy.exists():
        report["profile"] = top_functions(args.py_spy)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_table(report)
    complete = all(r["delivered"] >= r["messages"] for r in report["results"])
    # T42: a throughput claim holds only with TLS on every connection, for both systems.
    plaintext = [
        f"{r['system']}: {r['sink_connections'] - r['sink_tls_handshakes']} of "
        f"{r['sink_connections']} connections without TLS"
        for r in report["results"]
        if r["sink_tls_handshakes"] < r["sink_connections"]
    ]
    for line in plaintext:
        print(f"T42 not met, this run proves nothing: {line}", file=sys.stderr)
    if plaintext:
        return 2
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
