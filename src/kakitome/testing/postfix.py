"""A private Postfix instance on loopback: a real, independent MTA for tests and benchmarks.

What it talks to: Debian's Postfix programs (``postfix``, ``postqueue``, ``postmap`` and the
daemons they start), over their command lines; the instance's own ``maillog`` file; and
``/proc`` for CPU accounting. It never reads or writes ``/etc/postfix`` except as Postfix's
read-only ``meta_directory`` (the list of files and maps that ships with the package), and
never touches the system instance: every instance has its own config, queue and data
directories and its own log file under one root directory.

Two shapes are built here:

- :func:`receiving_instance` — an MTA listening on ``127.0.0.x:<port>`` with STARTTLS
  (certificate and key given by the caller, normally from a test CA) that accepts mail for
  given domains into a Maildir or discards it. Its maillog says, per connection, which TLS
  protocol and cipher were negotiated (:meth:`PostfixInstance.tls_sessions`).
- :func:`relay_instance` — the benchmark's peer (``shared/bench/postfix-relay.md``): it
  accepts mail from 127.0.0.0/8 and relays it per domain to sinks through
  ``transport_maps``, with ``smtp_tls_security_level = may`` and TLS connection reuse on or
  off.

What it trusts: the Postfix binaries on ``PATH``/``/usr/sbin`` and the caller's arguments.
Addresses must lie in 127.0.0.0/8; anything else is refused, so a test cannot send mail off
the machine by mistake (transport destinations are checked the same way).

Limits: Postfix must run as root to start (``postfix start`` refuses otherwise), so this
module only works for root; the fixtures in ``tests/fixtures_peers.py`` skip or fail with
a reason elsewhere. The instance's root directory and its parents must be traversable by
the ``postfix`` user (``/tmp`` is; pytest's ``tmp_path`` is not, it is mode 0700), which
:func:`make_instance_root` takes care of. Chroot is off for every service (the root
directory is not a prepared chroot jail), which is fine for tests, not for production.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PostfixError",
    "PostfixInstance",
    "TLSSession",
    "find_program",
    "make_instance_root",
    "parse_tls_sessions",
    "postfix_unavailable_reason",
    "receiving_instance",
    "relay_instance",
]

SBIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
DAEMON_DIRECTORY = "/usr/lib/postfix/sbin"
SHLIB_DIRECTORY = "/usr/lib/postfix"
META_DIRECTORY = "/etc/postfix"
MASTER_PROTO = Path(META_DIRECTORY) / "master.cf.proto"

# "Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher
#  TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 ..."
# "Trusted TLS connection established to d1.test[127.0.0.20]:2525: TLSv1.3 with cipher ..."
_TLS_LINE = re.compile(
    r"/(?P<service>[\w.-]+)\[(?P<pid>\d+)\]: "
    r"(?P<trust>\w+) TLS connection established (?P<direction>from|to) "
    r"(?P<peer>\S+?):? (?P<protocol>\S+) with cipher (?P<cipher>\S+) \((?P<bits>[\d/]+) bits\)"
)
_PEER = re.compile(r"(?P<name>[^\[]*)\[(?P<ip>[^\]]+)\](?::(?P<port>\d+))?")


class PostfixError(RuntimeError):
    """A Postfix command failed or the instance did not become ready in time."""


@dataclass(frozen=True)
class TLSSession:
    """One TLS handshake that Postfix logged.

    ``direction`` is ``"from"`` for a connection Postfix received (smtpd) and ``"to"`` for
    one it made (smtp or tlsproxy); ``trust`` is Postfix's word for the peer certificate
    (``Anonymous``, ``Untrusted``, ``Trusted``, ``Verified``).
    """

    service: str
    pid: int
    direction: str
    trust: str
    peer_name: str
    peer_ip: str
    peer_port: int | None
    protocol: str
    cipher: str
    bits: str


def parse_tls_sessions(lines: Iterable[str]) -> list[TLSSession]:
    """Every "TLS connection established" record in maillog lines, in log order."""
    sessions: list[TLSSession] = []
    for line in lines:
        match = _TLS_LINE.search(line)
        if match is None:
            continue
        peer = _PEER.fullmatch(match["peer"])
        name, ip, port = (
            (peer["name"], peer["ip"], int(peer["port"]) if peer["port"] else None)
            if peer
            else (match["peer"], "", None)
        )
        sessions.append(
            TLSSession(
                service=match["service"],
                pid=int(match["pid"]),
                direction=match["direction"],
                trust=match["trust"],
                peer_name=name,
                peer_ip=ip,
                peer_port=port,
                protocol=match["protocol"],
                cipher=match["cipher"],
                bits=match["bits"],
            )
        )
    return sessions


def find_program(name: str) -> str | None:
    """Path of a Postfix program; Postfix installs into /usr/sbin, often not on PATH."""
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def postfix_unavailable_reason() -> str | None:
    """Why a private instance cannot run here, or None when it can."""
    for program in ("postfix", "postqueue", "postmap", "smtp-source"):
        if find_program(program) is None:
            return f"Postfix program {program!r} not found (apt-get install postfix)"
    if not MASTER_PROTO.is_file():
        return f"{MASTER_PROTO} is missing (Debian's postfix package ships it)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "there is no 'postfix' user (apt-get install postfix creates it)"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root"
    return None


def make_instance_root(prefix: str = "kakitome-postfix-") -> Path:
    """A fresh directory under the system temp dir that the postfix user can traverse."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def _require_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address: tests never leave 127.0.0.0/8")


class PostfixInstance:
    """A private Postfix instance under ``root``: etc/, spool/, data/, maillog.

    Build one with :func:`receiving_instance` or :func:`relay_instance`, then ``start()``
    (which waits until the listener greets) and ``stop()``; it is also a context manager.
    """

    def __init__(
        self,
        root: Path,
        *,
        listen: tuple[str, int],
        main_cf: Mapping[str, str],
        extra_files: Mapping[str, str] | None = None,
        postmap_files: Iterable[str] = (),
    ) -> None:
        _require_loopback(listen[0])
        self.root = root
        self.listen = listen
        self.config_dir = root / "etc"
        self.queue_dir = root / "spool"
        self.data_dir = root / "data"
        self.maillog = root / "maillog"
        self._main_cf = dict(main_cf)
        self._extra_files = dict(extra_files or {})
        self._postmap_files = tuple(postmap_files)
        self._written = False

    # -- configuration ---------------------------------------------------------------

    def base_parameters(self) -> dict[str, str]:
        """The parameters that make the instance private; callers add their own on top."""
        return {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "meta_directory": META_DIRECTORY,
            "command_directory": "/usr/sbin",
            "daemon_directory": DAEMON_DIRECTORY,
            "shlib_directory": SHLIB_DIRECTORY,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "mydestination": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "no",
            # No syslog on these machines: postlogd writes this file instead.
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            # A process name of its own, so `ps` tells the instances apart.
            "syslog_name": f"postfix-{self.root.name}",
        }

    def _master_cf(self) -> str:
        """master.cf.proto with chroot off everywhere and the smtpd listener on ``listen``."""
        host, port = self.listen
        out: list[str] = []
        for line in MASTER_PROTO.read_text().splitlines():
            if not line or line[0] in "# \t":
                out.append(line)
                continue
            fields = line.split()
            if len(fields) >= 8:
                fields[4] = "n"  # chroot: the root is no prepared jail
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"{host}:{port}"
                line = " ".join(fields)
            out.append(line)
        # The proto file ships tlsproxy commented out; smtp_tls_connection_reuse needs it.
        if not any(line.split()[:1] == ["tlsproxy"] for line in out):
            out.append("tlsproxy unix - - n - 0 tlsproxy")
        return "\n".join(out) + "\n"

    def write_config(self) -> None:
        """Write etc/main.cf, etc/master.cf and the extra files; create the directories."""
        postfix_user = pwd.getpwnam("postfix")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.config_dir.mkdir(exist_ok=True)
        self.queue_dir.mkdir(exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        os.chown(self.data_dir, postfix_user.pw_uid, postfix_user.pw_gid)
        parameters = self.base_parameters() | self._main_cf
        main = "".join(f"{key} = {value}\n" for key, value in parameters.items())
        (self.config_dir / "main.cf").write_text(main)
        (self.config_dir / "master.cf").write_text(self._master_cf())
        for name, text in self._extra_files.items():
            (self.config_dir / name).write_text(text)
        for name in self._postmap_files:
            self._run("postmap", "-c", str(self.config_dir), str(self.config_dir / name))
        self._written = True

    # -- life cycle --------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Write the configuration, start the master and wait until the listener greets."""
        reason = postfix_unavailable_reason()
        if reason is not None:
            raise PostfixError(reason)
        if not self._written:
            self.write_config()
        self._run("postfix", "-c", str(self.config_dir), "start")
        self.wait_until_ready(timeout)

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        """Block until the smtpd listener answers with a 220 greeting."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(self.listen, timeout=2.0) as sock:
                    banner = sock.recv(512)
                    if banner.startswith(b"220"):
                        sock.sendall(b"QUIT\r\n")
                        return
                    last_error = PostfixError(f"unexpected greeting {banner!r}")
            except OSError as exc:
                last_error = exc
            time.sleep(0.1)
        raise PostfixError(
            f"Postfix at {self.listen[0]}:{self.listen[1]} not ready after {timeout}s "
            f"({last_error}); maillog tail:\n{self.maillog_tail()}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the master and its children; escalate to ``postfix abort`` if need be."""
        pid = self.master_pid()
        if pid is None:
            return
        subprocess.run(
            [self._program("postfix"), "-c", str(self.config_dir), "stop"],
            capture_output=True,
            text=True,
            check=False,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)
        subprocess.run(
            [self._program("postfix"), "-c", str(self.config_dir), "abort"],
            capture_output=True,
            check=False,
        )

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- queue -------------------------------------------------------------------------

    def flush(self) -> None:
        """Ask the queue manager to attempt every deferred message now (postqueue -f)."""
        self._run("postqueue", "-c", str(self.config_dir), "-f")

    def queue_listing(self) -> str:
        """What ``postqueue -p`` prints."""
        return self._run("postqueue", "-c", str(self.config_dir), "-p")

    def queue_is_empty(self) -> bool:
        """True when no message is queued in any queue, maildrop included.

        Counts files rather than asking ``showq``: it is cheaper to poll and covers mail
        that ``postqueue -p`` does not yet list.
        """
        for name in ("maildrop", "incoming", "active", "deferred", "hold"):
            directory = self.queue_dir / name
            if directory.is_dir() and any(_files(directory)):
                return False
        return True

    def wait_queue_empty(
        self, timeout: float = 600.0, poll: float = 0.05, *, fail_on_deferred: bool = False
    ) -> float:
        """Block until the queue is empty; return the monotonic time it was seen empty.

        With ``fail_on_deferred``, a message in the deferred queue raises at once (a run
        that expects every delivery to succeed need not wait for the retry).
        """
        deadline = time.monotonic() + timeout
        deferred = self.queue_dir / "deferred"
        while True:
            now = time.monotonic()
            if self.queue_is_empty():
                return now
            if fail_on_deferred and deferred.is_dir() and any(_files(deferred)):
                raise PostfixError(f"a message was deferred; maillog tail:\n{self.maillog_tail()}")
            if now > deadline:
                raise PostfixError(
                    f"queue not empty after {timeout}s:\n{self.queue_listing()[-2000:]}"
                )
            time.sleep(poll)

    # -- observation -------------------------------------------------------------------

    def maillog_lines(self) -> list[str]:
        """The maillog so far (empty before the first line is written)."""
        try:
            return self.maillog.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def maillog_tail(self, lines: int = 30) -> str:
        return "\n".join(self.maillog_lines()[-lines:])

    def tls_sessions(self, direction: str | None = None) -> list[TLSSession]:
        """TLS handshakes in the maillog; ``direction`` ``"from"`` (received), ``"to"`` (sent)."""
        sessions = parse_tls_sessions(self.maillog_lines())
        if direction is None:
            return sessions
        return [session for session in sessions if session.direction == direction]

    def count_log(self, pattern: str) -> int:
        """Maillog lines matching a regular expression."""
        compiled = re.compile(pattern)
        return sum(1 for line in self.maillog_lines() if compiled.search(line))

    def master_pid(self) -> int | None:
        """The master's pid while it runs, else None."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by the master and all its processes.

        Live processes count their own time; children that have exited and been reaped
        count through their parent's ``cutime``/``cstime``. Sample before and after a run
        and subtract. Returns 0.0 when the instance is not running.
        """
        master = self.master_pid()
        if master is None:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        stats = dict(_proc_stats())
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        total = 0
        stack = [master]
        while stack:
            pid = stack.pop()
            if pid in stats:
                total += stats[pid][1]
            stack.extend(children.get(pid, ()))
        return total / ticks

    def resident_mb(self) -> float:
        """Resident memory (VmRSS) of the master and all its live processes, in MB: sample
        it during a run for the peak (processes that come and go are seen while alive).
        Returns 0.0 when the instance is not running."""
        master = self.master_pid()
        if master is None:
            return 0.0
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in _proc_stats():
            children.setdefault(ppid, []).append(pid)
        total_kb = 0
        stack = [master]
        while stack:
            pid = stack.pop()
            total_kb += _resident_kb(pid)
            stack.extend(children.get(pid, ()))
        return total_kb / 1024

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _program(name: str) -> str:
        path = find_program(name)
        if path is None:
            raise PostfixError(f"Postfix program {name!r} not found")
        return path

    def _run(self, program: str, *args: str) -> str:
        # `postfix start` reports errors on syslog and stderr; keep both for the message.
        result = subprocess.run(
            [self._program(program), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise PostfixError(
                f"{program} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\nmaillog tail:\n{self.maillog_tail()}"
            )
        return result.stdout


def _files(directory: Path) -> Iterator[Path]:
    for _dirpath, _dirnames, filenames in os.walk(directory):
        for name in filenames:
            yield Path(name)


def _resident_kb(pid: int) -> int:
    """VmRSS of a process in kB (0 when it has exited or is a kernel thread)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _proc_stats() -> Iterator[tuple[int, tuple[int, int]]]:
    """(pid, (ppid, utime+stime+cutime+cstime in clock ticks)) for every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name is in parentheses and may contain spaces: split after it.
        fields = text[text.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        yield int(entry), (ppid, utime + stime + cutime + cstime)


def receiving_instance(
    root: Path,
    *,
    listen: tuple[str, int],
    cert_file: Path,
    key_file: Path,
    domains: Iterable[str],
    mailbox_dir: Path | None = None,
    hostname: str = "mx.postfix.test",
    tls_level: str = "may",
) -> PostfixInstance:
    """An MTA on ``listen`` with STARTTLS that accepts mail for ``domains``.

    Mail goes into the Maildir ``mailbox_dir`` (``new/`` holds one file per delivered
    message, whatever the recipient), or is discarded when ``mailbox_dir`` is None.
    ``cert_file`` holds the server certificate (and its chain); ``key_file`` its key.
    ``tls_level`` is ``smtpd_tls_security_level`` (``may`` offers STARTTLS,
    ``encrypt`` requires it, ``none`` hides it).
    """
    domain_list = " ".join(domains)
    if not domain_list:
        raise ValueError("a receiving instance needs at least one domain")
    parameters = {
        "myhostname": hostname,
        "virtual_mailbox_domains": domain_list,
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "smtpd_tls_security_level": tls_level,
        "smtpd_tls_cert_file": str(cert_file),
        "smtpd_tls_key_file": str(key_file),
        "smtpd_tls_loglevel": "1",
        "smtpd_tls_received_header": "yes",
        "smtp_tls_security_level": "none",
    }
    if mailbox_dir is None:
        parameters["virtual_transport"] = "discard"
        parameters["virtual_mailbox_maps"] = "static:discard"
    else:
        postfix_user = pwd.getpwnam("postfix")
        mailbox_dir.mkdir(parents=True, exist_ok=True)
        os.chown(mailbox_dir, postfix_user.pw_uid, postfix_user.pw_gid)
        # The virtual agent writes as the postfix user; a trailing slash means Maildir.
        parameters |= {
            "virtual_mailbox_base": str(mailbox_dir.parent),
            "virtual_mailbox_maps": f"static:{mailbox_dir.name}/",
            "virtual_uid_maps": f"static:{postfix_user.pw_uid}",
            "virtual_gid_maps": f"static:{postfix_user.pw_gid}",
            "virtual_minimum_uid": "1",
        }
    return PostfixInstance(root, listen=listen, main_cf=parameters)


def relay_instance(
    root: Path,
    *,
    listen: tuple[str, int],
    routes: Mapping[str, tuple[str, int]],
    ca_file: Path | None = None,
    connection_reuse: bool = False,
    hostname: str = "relay.bench.test",
    extra_parameters: Mapping[str, str] | None = None,
) -> PostfixInstance:
    """The benchmark's Postfix: relays mail for each domain in ``routes`` to its sink.

    ``routes`` maps a recipient domain to a loopback ``(host, port)``; Postfix cannot use a
    DNS server on another port, so the transport table stands in for MX records. Outbound
    TLS is opportunistic (``may``), verified against ``ca_file`` when given (the result is
    logged as Trusted/Verified/Untrusted, it never blocks). ``connection_reuse`` sets
    ``smtp_tls_connection_reuse`` (Postfix's default ``no`` opens a TLS session per
    message; ``yes`` keeps TLS connections through tlsproxy).
    """
    lines = []
    for domain, (host, port) in routes.items():
        _require_loopback(host)
        lines.append(f"{domain} smtp:[{host}]:{port}\n")
    parameters = {
        "myhostname": hostname,
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "transport_maps": f"hash:{root / 'etc' / 'transport'}",
        "smtp_tls_security_level": "may",
        "smtp_tls_loglevel": "1",
        "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
        "smtp_tls_connection_reuse": "yes" if connection_reuse else "no",
        "smtpd_tls_security_level": "none",
    }
    if ca_file is not None:
        parameters["smtp_tls_CAfile"] = str(ca_file)
    parameters |= dict(extra_parameters or {})
    return PostfixInstance(
        root,
        listen=listen,
        main_cf=parameters,
        extra_files={"transport": "".join(lines)},
        postmap_files=("transport",),
    )
