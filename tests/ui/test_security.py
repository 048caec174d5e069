"""Admin UI security: CSRF, session fixation, XSS, lock-out, roles, open redirects, headers."""

from __future__ import annotations

import time

import httpx
import pytest

from kakitome.accounts.store import WebStore
from kakitome.queue.store import QueueStore
from kakitome.queue.types import NewMessage, NewRecipient
from kakitome.receipts import receipt_to_dict
from kakitome.store.database import Database
from kakitome.web.ui.security import safe_next

from .conftest import PASSWORD, Login, csrf_of, login_as

XSS = "<script>alert('x')</script>"


async def _message(
    store: Database, subject: str = "hello", recipient: str = "a@example.com"
) -> str:
    domain = recipient.rpartition("@")[2]
    message = NewMessage(
        source="api",
        sender="news@sender.test",
        header_from="news@sender.test",
        subject=subject,
        content=b"Subject: x\r\n\r\nbody\r\n",
        recipients=(NewRecipient(recipient, domain),),
    )
    return await QueueStore(store).inject(message, now=time.time(), lifetime=3600)


async def test_login_post_without_csrf_is_refused(client: httpx.AsyncClient, web: WebStore) -> None:
    """A login POST without the CSRF token, or with a wrong one, gets 403."""
    await web.create_user("admin", PASSWORD, "admin", now=time.time())
    await client.get("/ui/login")
    missing = await client.post("/ui/login", data={"username": "admin", "password": PASSWORD})
    wrong = await client.post(
        "/ui/login", data={"username": "admin", "password": PASSWORD, "csrf_token": "x" * 43}
    )
    assert missing.status_code == 403
    assert wrong.status_code == 403
    assert "kakitome_session" not in client.cookies


async def test_every_post_route_needs_the_csrf_token(user_client: Login, store: Database) -> None:
    """Logged in as admin, each POST of the UI without the token (or with another's) is 403."""
    admin = await user_client("admin", "admin")
    message_id = await _message(store)
    posts = [
        ("/ui/logout", {}),
        ("/ui/language", {"lang": "ja"}),
        ("/ui/queue/actions", {"action": "delete", "message_id": message_id}),
        ("/ui/api-keys", {"name": "k", "scope": "send"}),
        ("/ui/api-keys/1/revoke", {}),
        ("/ui/users", {"username": "x", "password": PASSWORD, "role": "admin"}),
        ("/ui/users/1/role", {"role": "viewer"}),
        ("/ui/users/1/password", {"password": "another password 1"}),
        ("/ui/users/1/remove", {}),
    ]
    for path, data in posts:
        assert (await admin.post(path, data=data)).status_code == 403, path
        bad = {**data, "csrf_token": "not-the-token-of-this-session-at-all-000000"}
        assert (await admin.post(path, data=bad)).status_code == 403, path
    # Nothing happened: the message is still queued, the admin still logged in.
    receipt = receipt_to_dict(await QueueStore(store).receipt(message_id))
    assert receipt["recipients"][0]["status"] == "queued"
    assert (await admin.get("/ui/")).status_code == 200


async def test_session_id_changes_at_login(client: httpx.AsyncClient, web: WebStore) -> None:
    """A session cookie planted before login is replaced by a new one and is worthless."""
    await web.create_user("admin", PASSWORD, "admin", now=time.time())
    planted = "attacker-chosen-session-value-1234567890abc"
    client.cookies.set("kakitome_session", planted, domain="kakitome.test")
    response = await login_as(client, "admin")
    assert response.status_code == 303
    issued = response.cookies.get("kakitome_session")
    assert issued and issued != planted
    assert await web.session(planted, now=time.time()) is None
    assert await web.session(issued, now=time.time()) is not None
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


async def test_second_login_gets_another_session(client: httpx.AsyncClient, web: WebStore) -> None:
    """Logging in again rotates the session: the old token stops working."""
    await web.create_user("admin", PASSWORD, "admin", now=time.time())
    first = (await login_as(client, "admin")).cookies["kakitome_session"]
    client.cookies.clear()
    second = (await login_as(client, "admin")).cookies["kakitome_session"]
    assert first != second


async def test_secure_cookie_over_https(store: Database, web: WebStore) -> None:
    """Behind https (public_url), the session cookie is Secure."""
    from kakitome.config import Settings
    from kakitome.services import build_services
    from kakitome.web import create_app

    settings = Settings.model_validate({"http": {"public_url": "https://mail.example.com"}})
    app = create_app(build_services(settings, store, signing=None))
    await web.create_user("admin", PASSWORD, "admin", now=time.time())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://kakitome.test") as c:
        response = await login_as(c, "admin")
    assert "secure" in response.headers["set-cookie"].lower()


async def test_xss_in_subject_address_and_remote_reply_is_escaped(
    user_client: Login, store: Database
) -> None:
    """Script tags in a subject, an address and a remote SMTP reply are shown as text."""
    from kakitome.delivery.types import Outcome, RecipientResult
    from kakitome.queue.schedule import RetrySchedule
    from kakitome.smtp.replies import Reply

    viewer = await user_client("viewer", "viewer")
    recipient = f'"{XSS}"@example.com'
    message_id = await _message(store, subject=XSS, recipient=recipient)
    batches = await QueueStore(store).claim_due(
        "w", now=time.time() + 1, limit=10, lease_seconds=60
    )
    delivery_id = batches[0].messages[0].recipients[0].delivery_id
    reply = Reply(550, "5.1.1", f"{XSS} <img src=x onerror=alert(1)>")
    await QueueStore(store).record_results(
        "w",
        [RecipientResult(delivery_id, Outcome.BOUNCED, reply)],
        now=time.time(),
        schedule=RetrySchedule(),
    )
    for path in (f"/ui/messages/{message_id}", "/ui/messages", f"/ui/messages?q={XSS}"):
        page = (await viewer.get(path)).text
        assert "<script>alert" not in page, path
        assert "<img src=x" not in page, path
    detail = (await viewer.get(f"/ui/messages/{message_id}")).text
    assert "&lt;script&gt;alert(" in detail
    assert "&lt;img src=x onerror=alert(1)&gt;" in detail


async def test_lockout_after_repeated_failures(client: httpx.AsyncClient, web: WebStore) -> None:
    """After 5 wrong passwords the right one is refused too (429) for that account."""
    await web.create_user("admin", PASSWORD, "admin", now=time.time())
    for _ in range(5):
        assert (await login_as(client, "admin", "wrong password!!")).status_code == 401
    locked = await login_as(client, "admin")
    assert locked.status_code == 429
    assert "kakitome_session" not in locked.cookies
    # An unknown user gets the same answers (no enumeration).
    for _ in range(5):
        assert (await login_as(client, "nobody", "wrong password!!")).status_code == 401
    assert (await login_as(client, "nobody", "wrong password!!")).status_code == 429


async def test_lockout_per_ip(store: Database, web: WebStore) -> None:
    """Many failures from one IP across user names lock that IP out."""
    from kakitome.config import Settings
    from kakitome.services import build_services
    from kakitome.web import create_app

    settings = Settings()
    app = create_app(build_services(settings, store, signing=None))
    await web.create_user("admin", PASSWORD, "admin", now=time.time())
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://kakitome.test") as c:
        for n in range(20):
            assert (await login_as(c, f"guess{n}", "wrong password!!")).status_code == 401
        assert (await login_as(c, "admin")).status_code == 429


@pytest.mark.parametrize("action", ["delete", "hold", "release", "retry"])
async def test_viewer_cannot_act_on_the_queue(
    user_client: Login, store: Database, action: str
) -> None:
    """A viewer's bulk action, with a valid CSRF token, is refused (403) and changes nothing."""
    viewer = await user_client("viewer", "viewer")
    message_id = await _message(store)
    token = csrf_of((await viewer.get("/ui/queue")).text)
    response = await viewer.post(
        "/ui/queue/actions",
        data={"csrf_token": token, "action": action, "message_id": message_id},
    )
    assert response.status_code == 403
    receipt = receipt_to_dict(await QueueStore(store).receipt(message_id))
    assert receipt["recipients"][0]["status"] == "queued"


async def test_roles_on_every_page(user_client: Login, client: httpx.AsyncClient) -> None:
    """Anonymous users are sent to the login page; each role sees only its pages."""
    pages = {
        "/ui/": "viewer",
        "/ui/messages": "viewer",
        "/ui/queue": "viewer",
        "/ui/api-keys": "sender",
        "/ui/users": "admin",
        "/ui/settings": "admin",
    }
    for path in pages:
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/login?next=")
    rank = {"viewer": 0, "sender": 1, "admin": 2}
    for role in ("viewer", "sender", "admin"):
        c = await user_client(f"u-{role}", role)
        for path, needed in pages.items():
            expected = 200 if rank[role] >= rank[needed] else 403
            assert (await c.get(path)).status_code == expected, (role, path)


async def test_sender_can_hold_and_release(user_client: Login, store: Database) -> None:
    """A sender holds and releases a queued message from the Queue page."""
    sender = await user_client("sender", "sender")
    message_id = await _message(store)
    token = csrf_of((await sender.get("/ui/queue")).text)
    held = await sender.post(
        "/ui/queue/actions", data={"csrf_token": token, "action": "hold", "message_id": message_id}
    )
    assert held.status_code == 303
    assert (
        receipt_to_dict(await QueueStore(store).receipt(message_id))["recipients"][0]["status"]
        == "held"
    )


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/ui/",
        "/\\evil.example",
        "/ui/../\\\\evil",
        "javascript:alert(1)",
        "http:/evil.example",
        "/ui//evil.example",
        "/other",
    ],
)
async def test_open_redirect_refused(client: httpx.AsyncClient, web: WebStore, target: str) -> None:
    """After login, ``next`` pointing off the UI leads to the dashboard instead."""
    await web.create_user("admin", PASSWORD, "admin", now=time.time())
    page = await client.get("/ui/login", params={"next": target})
    response = await client.post(
        "/ui/login",
        data={
            "csrf_token": csrf_of(page.text),
            "username": "admin",
            "password": PASSWORD,
            "next": target,
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"


def test_safe_next_keeps_local_paths() -> None:
    """A local UI path with a query survives ``safe_next``."""
    assert safe_next("/ui/messages?q=a%40b.test") == "/ui/messages?q=a%40b.test"
    assert safe_next("/ui/") == "/ui/"


async def test_security_headers(client: httpx.AsyncClient) -> None:
    """UI pages carry CSP, frame denial, nosniff and no-store."""
    response = await client.get("/ui/login")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
