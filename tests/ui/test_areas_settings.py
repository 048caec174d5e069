"""Editable settings and routes in the admin UI: forms with CSRF, sources, refusals in
English and Japanese, and a route change taken by a running MX without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from kakitome.accounts.store import WebStore
from kakitome.config import Settings, load_settings
from kakitome.inbound.forward import verify_signature
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.store.settings_store import SettingsStore
from kakitome.web import create_app
from tests.inbound.conftest import (  # noqa: F401 - start_inbound is a fixture
    INBOUND_DOMAIN,
    RawClient,
    StartInbound,
    start_inbound,
)

from .conftest import PASSWORD, csrf_of, login_as

BASE = "http://kakitome.test"
MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


async def post_form(client: httpx.AsyncClient, page: str, path: str, **data: str) -> httpx.Response:
    """POST ``data`` to ``path`` with the CSRF token (and the routes' version) of ``page``."""
    html = (await client.get(page)).text
    form: dict[str, str] = {"csrf_token": csrf_of(html)}
    if 'name="version" value="' in html:
        form["version"] = html.split('name="version" value="', 1)[1].split('"', 1)[0]
    form.update(data)
    return await client.post(path, data=form)


@pytest.fixture
async def clients(store: Database) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """``await clients(role, settings=None, lang="en", store=None)``: a logged-in client of a
    new user on an app over ``store`` (the fixture's unless another is given)."""
    opened: list[httpx.AsyncClient] = []

    async def make(
        role: str, settings: Settings | None = None, lang: str = "en", on: Database | None = None
    ) -> httpx.AsyncClient:
        db = on or store
        config = settings or Settings()
        app = create_app(build_services(config, db, signing=None))
        name = f"{role}{len(opened)}-{time.monotonic_ns()}"
        await WebStore(db.engine).create_user(name, PASSWORD, role, now=time.time())
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=BASE,
            headers={"Accept-Language": lang},
        )
        opened.append(client)
        assert (await login_as(client, name)).status_code == 303
        return client

    yield make
    for client in opened:
        await client.aclose()


# -- the settings page ------------------------------------------------------------------


async def test_settings_page_shows_sources_and_saves_changes(
    store: Database, clients: MakeClient
) -> None:
    """An admin sees where each value comes from, changes two keys in one form (only the
    changed ones are stored), and resets one; a viewer may not see the page."""
    settings = load_settings(environ={"KAKITOME_QUEUE__RETRY_MAX": "7200"})
    admin = await clients("admin", settings)
    page = await admin.get("/ui/settings")
    assert page.status_code == 200
    assert 'name="v:queue.retry_first"' in page.text
    assert 'name="v:queue.retry_max"' not in page.text  # set by the environment
    assert 'name="v:database.url"' not in page.text  # never editable
    saved = await post_form(
        admin,
        "/ui/settings",
        "/ui/settings",
        **{
            "v:queue.retry_first": "60",
            "v:tls.policy": "bank.example verify\n.gov.example secure",
            "v:stripping.defer": "true",  # unchanged: not stored
        },
    )
    assert saved.status_code == 200, saved.text
    assert "Saved: queue.retry_first, tls.policy." in saved.text
    overlay = SettingsStore(store.engine)
    assert await overlay.values() == {
        "queue.retry_first": 60.0,
        "tls.policy": {"bank.example": "verify", ".gov.example": "secure"},
    }
    entry = (await overlay.entries())["queue.retry_first"]
    assert entry.updated_by.startswith("user admin")
    row = saved.text.split('data-key="queue.retry_first"', 1)[1].split("</tr>", 1)[0]
    assert "changed here" in row and "at the next start" in row
    row = saved.text.split('data-key="queue.retry_max"', 1)[1].split("</tr>", 1)[0]
    assert "environment" in row and "7200" in row
    reset = await post_form(admin, "/ui/settings", "/ui/settings", reset="tls.policy")
    assert reset.status_code == 200
    assert await overlay.values() == {"queue.retry_first": 60.0}
    viewer = await clients("viewer", settings)
    assert (await viewer.get("/ui/settings")).status_code == 403


async def test_settings_refusals_in_english_and_japanese_store_nothing(
    store: Database, clients: MakeClient
) -> None:
    """A bad value among good ones: 422, the problem in the viewer's language, nothing
    stored; a form without the CSRF token stores nothing either."""
    overlay = SettingsStore(store.engine)
    for lang, expected in (
        ("en", "queue.retry_first: must be 0 or more."),
        ("ja", "queue.retry_first: 0 以上の値にしてください。"),
    ):
        admin = await clients("admin", lang=lang)
        refused = await post_form(
            admin,
            "/ui/settings",
            "/ui/settings",
            **{"v:queue.retry_first": "-5", "v:queue.retry_max": "600"},
        )
        assert refused.status_code == 422
        assert expected in refused.text
        assert 'value="-5"' in refused.text  # what was typed is kept
        assert await overlay.values() == {}
    admin = await clients("admin", lang="ja")
    refused = await post_form(admin, "/ui/settings", "/ui/settings", **{"v:tls.default_level": "x"})
    assert "tls.default_level: 次のいずれかにしてください" in refused.text
    forged = await admin.post("/ui/settings", data={"v:queue.retry_first": "1"})
    assert forged.status_code == 403
    assert await overlay.values() == {}


# -- routes ------------------------------------------------------------------------------


async def _rcpt(port: int, recipient: str) -> str:
    client = await RawClient.connect(port)
    try:
        await client.cmd("EHLO probe.test")
        assert (await client.cmd("MAIL FROM:<someone@probe.test>")).startswith("250")
        return await client.cmd(f"RCPT TO:<{recipient}>")
    finally:
        await client.cmd("QUIT")
        await client.close()


async def _until(port: int, recipient: str, code: str, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until the MX answers RCPT for ``recipient`` with ``code``."""
    deadline = time.monotonic() + timeout
    reply = ""
    while time.monotonic() < deadline:
        reply = await _rcpt(port, recipient)
        if reply.startswith(code):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"RCPT {recipient}: still {reply!r} after {timeout} s")


async def _send(port: int, recipient: str, subject: str) -> str:
    client = await RawClient.connect(port)
    try:
        await client.cmd("EHLO probe.test")
        assert (await client.cmd("MAIL FROM:<someone@probe.test>")).startswith("250")
        rcpt = await client.cmd(f"RCPT TO:<{recipient}>")
        assert rcpt.startswith("250"), rcpt
        assert (await client.cmd("DATA")).startswith("354")
        body = f"From: someone@probe.test\r\nTo: {recipient}\r\nSubject: {subject}\r\n\r\nhi\r\n"
        await client.send(body.encode() + b".\r\n")
        return await client.reply()
    finally:
        await client.close()


class Receiver:
    """An HTTP endpoint on loopback that answers 200 and keeps each POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.posted = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.posts.append((headers, body))
        self.posted.set()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_route_edited_in_the_ui_is_taken_by_the_running_mx(
    database_url: str,
    start_inbound: StartInbound,  # noqa: F811 - the fixture imported above
    clients: MakeClient,
) -> None:
    """Routes added, reordered and edited through the form (with CSRF) change what the
    running MX (aiosmtpd on loopback) does with the next message - reject, hold, or forward
    signed with the secret typed in the form - without a restart; a bad edit is refused in
    Japanese and changes nothing."""
    running = await start_inbound(database_url)
    mx = running.mx
    sales, other = f"sales@{INBOUND_DOMAIN}", f"other@{INBOUND_DOMAIN}"
    admin = await clients("admin", running.settings, on=running.store)
    assert (await _rcpt(mx, sales)).startswith("250")  # no route yet: held

    added = await post_form(
        admin, "/ui/routes", "/ui/routes", match=sales, action="reject", url="", secret=""
    )
    assert added.status_code == 200, added.text
    assert "Route added." in added.text
    await _until(mx, sales, "550")
    assert (await _rcpt(mx, other)).startswith("250")

    added = await post_form(admin, "/ui/routes", "/ui/routes", match="*", action="hold")
    assert added.status_code == 200
    moved = await post_form(admin, "/ui/routes", "/ui/routes/1/move", direction="up")
    assert moved.status_code == 200
    assert moved.text.index("<code>*</code>") < moved.text.index(f"<code>{sales}</code>")
    await _until(mx, sales, "250")  # "*" (hold) comes first now
    assert (await _send(mx, sales, "held by the catch-all")).startswith("250")
    rows = await running.inbound.list_inbound(kind="route")
    assert [(r.status, r.route) for r in rows][-1] == ("held", "*")

    receiver = Receiver()
    port = await receiver.start()
    try:
        url = f"http://127.0.0.1:{port}/hook"
        edited = await post_form(
            admin,
            "/ui/routes",
            "/ui/routes/1",
            match=sales,
            action="forward",
            url=url,
            secret="typed-in-the-form",
        )
        assert edited.status_code == 200, edited.text
        assert "typed-in-the-form" not in edited.text
        moved = await post_form(admin, "/ui/routes", "/ui/routes/1/move", direction="up")
        assert moved.status_code == 200  # now: sales@ forward, then "*" hold
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if running.service.live and running.service.live.current.inbound.routes[0].url:
                break
            await asyncio.sleep(0.1)
        assert (await _send(mx, sales, "forwarded")).startswith("250")
        # The forwarder looks for due messages every 5 s.
        await asyncio.wait_for(receiver.posted.wait(), 15)
        headers, body = receiver.posts[0]
        assert b"Subject: forwarded" in body
        assert verify_signature(
            b"typed-in-the-form", body, headers["kakitome-signature"], now=time.time()
        )
    finally:
        receiver.close()

    stored = (await SettingsStore(running.store.engine).values())["inbound.routes"]
    japanese = await clients("admin", running.settings, lang="ja", on=running.store)
    refused = await post_form(
        japanese, "/ui/routes", "/ui/routes/1", match="*", action="forward", url=""
    )
    assert refused.status_code == 422
    assert "inbound.routes.1.url: 転送 (forward) ルートには" in refused.text
    assert (await SettingsStore(running.store.engine).values())["inbound.routes"] == stored
    stale = await japanese.post(
        "/ui/routes/0/remove",
        data={"csrf_token": csrf_of(refused.text), "version": "not-the-current-list"},
    )
    assert stale.status_code == 409
    assert (await SettingsStore(running.store.engine).values())["inbound.routes"] == stored
    removed = await post_form(japanese, "/ui/routes", "/ui/routes/1/remove")
    assert removed.status_code == 200
    routes = (await SettingsStore(running.store.engine).values())["inbound.routes"]
    assert [(r["match"], r["action"], r["secret"]) for r in routes] == [
        (sales, "forward", "typed-in-the-form")
    ]


async def test_viewer_sees_routes_without_forms(store: Database, clients: MakeClient) -> None:
    """A viewer reads the routes but gets no form, and may not post one."""
    settings = Settings.model_validate(
        {"inbound": {"routes": [{"match": "*", "action": "hold", "secret": "hidden-secret"}]}}
    )
    viewer = await clients("viewer", settings)
    page = await viewer.get("/ui/routes")
    assert page.status_code == 200
    assert "<code>*</code>" in page.text and "hidden-secret" not in page.text
    assert 'id="route-add"' not in page.text
    refused = await viewer.post(
        "/ui/routes",
        data={"csrf_token": csrf_of(page.text), "match": "x.example", "action": "hold"},
    )
    assert refused.status_code == 403
    assert await SettingsStore(store.engine).values() == {}
