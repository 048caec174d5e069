"""Never an acknowledgment without storage: the SMTP listeners answer 451 (never 250) when
PostgreSQL is down at injection time, and on a full disk (SQLite on a tiny tmpfs) the API
answers 503 and the SMTP listeners 451; once space is back, everything acknowledged is
there."""

from __future__ import annotations

import contextlib
import os
import shutil
import smtplib
import sqlite3
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kakitome.testing import LocalInternet

from ..e2e.service import ServiceProcess, free_port
from .helpers import PrivatePostgres, worker_env

pytestmark = pytest.mark.heavy

RETURN_PATH_DOMAIN = "bounce.kakitome.test"  # MX: accepted at RCPT without a lookup
HOSTNAME = "mx.kakitome.test"


@dataclass
class Listeners:
    web: ServiceProcess
    mx: int
    submission: int
    ca_file: Path
    key: str
    user: str = ""
    password: str = ""

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.web.url, headers=headers, timeout=30)


def _start(world: LocalInternet, url: str, tmp_path: Path) -> Listeners:
    """``kakitome serve --role web --role smtp`` on ``url``, MX and submission on free
    loopback ports, and a submission user."""
    issued = world.ca.issue([HOSTNAME])
    mx, submission = free_port(), free_port()
    env = {
        **worker_env(world.env(), url),
        "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "data"),
        "KAKITOME_DELIVERY__HELO_HOSTNAME": HOSTNAME,
        "KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM": "true",
        "KAKITOME_INBOUND__BIND_HOST": "127.0.0.1",
        "KAKITOME_INBOUND__MX_PORT": str(mx),
        "KAKITOME_INBOUND__SUBMISSION_PORT": str(submission),
        "KAKITOME_INBOUND__CERT_FILE": str(issued.cert_file),
        "KAKITOME_INBOUND__KEY_FILE": str(issued.key_file),
        "KAKITOME_INBOUND__RETURN_PATH_DOMAINS": RETURN_PATH_DOMAIN,
        "KAKITOME_INBOUND__AUTH_FAILURE_DELAY": "0.01",
    }
    web = ServiceProcess(env, tmp_path, roles=("web", "smtp")).start(timeout=90)
    try:
        return _prepare(web, mx, submission, world.ca.ca_file)
    except BaseException:
        web.stop()
        raise


def _prepare(web: ServiceProcess, mx: int, submission: int, ca_file: Path) -> Listeners:
    """Wait for the SMTP listeners; a submission user and a sending domain."""
    running = Listeners(web, mx, submission, ca_file, web.wait_for_key())
    deadline = time.monotonic() + 30
    while not any("SMTP listeners" in line for line in web.output):
        assert time.monotonic() < deadline, web.log()
        time.sleep(0.1)
    with running.client() as client:
        made = client.post("/api/v1/smtp-users", json={"username": "sender"})
        assert made.status_code == 201, made.text
        running.user, running.password = "sender", made.json()["password"]
        added = client.post("/api/v1/domains", json={"domain": "sender.test"})
        assert added.status_code == 201, added.text
    return running


def _content(tag: str, size: int = 2_000) -> bytes:
    return (
        f"From: a@sender.test\r\nTo: b@example.test\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@sender.test>\r\n\r\n"
    ).encode() + (b"y" * 70 + b"\r\n") * max(1, size // 72)


class _Session:
    """An SMTP session opened (and, for submission, authenticated) before the fault, so
    that the transaction itself is what meets the fault."""

    def __init__(self, running: Listeners, listener: str) -> None:
        self.listener = listener
        port = running.mx if listener == "mx" else running.submission
        self.smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
        self.smtp.ehlo("client.test")
        if listener == "submission":
            context = ssl.create_default_context(cafile=str(running.ca_file))
            context.check_hostname = False  # reached by IP; the chain is still verified
            self.smtp.starttls(context=context)
            self.smtp.ehlo("client.test")
            self.smtp.login(running.user, running.password)

    def send(self, tag: str, size: int = 2_000) -> list[tuple[int, str]]:
        """MAIL, RCPT, DATA: every reply until the first refusal (RSET after it)."""
        smtp = self.smtp
        rcpt = f"x@{RETURN_PATH_DOMAIN}" if self.listener == "mx" else "b@example.test"
        replies: list[tuple[int, str]] = []
        for step in ("mail", "rcpt", "data"):
            code: int
            text: bytes | str
            if step == "mail":
                code, text = smtp.mail("a@sender.test")
            elif step == "rcpt":
                code, text = smtp.rcpt(rcpt)
            else:
                try:
                    code, text = smtp.data(_content(tag, size))
                except smtplib.SMTPDataError as exc:
                    code, text = exc.smtp_code, exc.smtp_error
            replies.append((code, text.decode() if isinstance(text, bytes) else str(text)))
            if code >= 400:
                with contextlib.suppress(smtplib.SMTPException):
                    smtp.rset()
                break
        return replies

    def close(self) -> None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self.smtp.quit()


def _refused_with_451(replies: list[tuple[int, str]]) -> None:
    """The transaction ended in 451 and nothing was acknowledged."""
    assert replies[-1][0] == 451, replies
    assert not any("queued as" in text for _, text in replies), replies


def _queued_id(replies: list[tuple[int, str]]) -> str:
    code, text = replies[-1]
    assert code == 250 and "queued as" in text, replies
    return text.rsplit(" ", 1)[-1].strip()


@pytest.mark.slow
def test_smtp_answers_451_when_the_database_is_down(
    world: LocalInternet, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    """PostgreSQL stopped: MX and submission answer 451 4.3.0, never 250; 250 once back."""
    running = _start(world, private_pg.url, tmp_path)
    sessions: list[_Session] = []
    try:
        sessions += [_Session(running, "mx"), _Session(running, "submission")]
        for session in sessions:
            _queued_id(session.send(f"before-{session.listener}"))
        private_pg.stop()
        for session in sessions:
            replies = session.send(f"down-{session.listener}")
            _refused_with_451(replies)
            assert "4.3.0" in replies[-1][1], replies
        private_pg.start()
        deadline = time.monotonic() + 30
        for session in sessions:
            while (replies := session.send(f"after-{session.listener}"))[-1][0] != 250:
                _refused_with_451(replies)
                assert time.monotonic() < deadline, replies
                time.sleep(0.5)
    finally:
        for session in sessions:
            session.close()
        running.web.stop()


@contextlib.contextmanager
def _tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on a new folder (root only), always unmounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    folder = Path(tempfile.mkdtemp(prefix="kakitome-full-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


def _fill(folder: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_disk_full_refuses_injection_and_loses_nothing(
    world: LocalInternet, tmp_path: Path
) -> None:
    """SQLite on a full disk: the API answers 503 and MX and submission 451 (never 202 or
    250 without a commit); with space again, everything acknowledged is stored."""
    with _tmpfs("48m") as disk:
        running = _start(world, f"sqlite:///{disk / 'kakitome.db'}", tmp_path)
        sessions: dict[str, _Session] = {}
        accepted_api: list[str] = []
        accepted_smtp: dict[str, list[str]] = {"mx": [], "submission": []}
        text = "z" * 400_000  # bigger than what the WAL file may already hold
        try:
            sessions.update((name, _Session(running, name)) for name in ("mx", "submission"))
            with running.client() as client:
                body = {"from": "a@sender.test", "to": ["b@example.test"], "subject": "s"}
                made = client.post("/api/v1/messages", json={**body, "text": "before"})
                assert made.status_code == 202, made.text
                accepted_api.append(made.json()["id"])
                filler = _fill(disk)
                # Writes that fit in pages SQLite already has may still succeed: keep
                # injecting until the disk says no; whatever was acknowledged must stay.
                refused = None
                for _ in range(40):
                    answer = client.post("/api/v1/messages", json={**body, "text": text})
                    if answer.status_code == 202:
                        accepted_api.append(answer.json()["id"])
                        continue
                    refused = answer
                    break
                assert refused is not None, "the full disk never refused an injection"
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "storage_unavailable"
                for name, session in sessions.items():
                    for i in range(40):
                        replies = session.send(f"full-{name}-{i}", size=400_000)
                        if replies[-1][0] == 250:
                            accepted_smtp[name].append(_queued_id(replies))
                            continue
                        _refused_with_451(replies)
                        break
                    else:
                        pytest.fail(f"{name}: the full disk never refused a message")
                filler.unlink()
                after = client.post("/api/v1/messages", json={**body, "text": "after"})
                assert after.status_code == 202, after.text
                accepted_api.append(after.json()["id"])
                for name, session in sessions.items():
                    accepted_smtp[name].append(_queued_id(session.send(f"after-{name}")))
                for message_id in [*accepted_api, *accepted_smtp["submission"]]:
                    receipt = client.get(f"/api/v1/messages/{message_id}")
                    assert receipt.status_code == 200, (message_id, receipt.text)
        finally:
            for session in sessions.values():
                session.close()
            running.web.stop()
        with contextlib.closing(sqlite3.connect(disk / "kakitome.db")) as db:
            stored = {row[0] for row in db.execute("SELECT id FROM inbound_messages")}
        assert set(accepted_smtp["mx"]) <= stored
        print(
            f"\n[disk-full] acknowledged and kept: {len(accepted_api)} API, "
            f"{len(accepted_smtp['submission'])} submission, {len(accepted_smtp['mx'])} MX"
        )
