"""Public pages over HTTP: unsubscribe GET changes nothing, POST works without cookies
(RFC 8058 one-click), double opt-in and sign-up, Japanese and English."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from fastapi import FastAPI

from kakitome.config import Settings
from kakitome.lists import ListService, OptIn
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.web.public import router
from tests.lists.conftest import make_list


@pytest.fixture
async def client(
    service: ListService, store: Database, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on an app with the public pages, keeping no cookies."""
    app = FastAPI()
    # The pages run on the services, with this test's list service (its stand-in injector).
    app.state.services = replace(build_services(settings, store, signing=None), lists=service)
    app.include_router(router)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4321))
    async with httpx.AsyncClient(transport=transport, base_url="https://news.example.jp") as c:
        yield c


async def _member(service: ListService) -> tuple[int, int, str]:
    lst = await make_list(service)
    member = await service.add_subscriber(lst.id, "u@example.jp", optin=OptIn("cli"))
    path = "/unsubscribe/" + service.unsubscribe_token(lst.id, member.subscriber.id)
    return lst.id, member.subscriber.id, path


async def test_get_shows_a_page_and_changes_nothing(
    service: ListService, client: httpx.AsyncClient
) -> None:
    """A link scanner's GET (even repeated) leaves the subscriber subscribed."""
    list_id, _, path = await _member(service)
    for _ in range(3):
        response = await client.get(path, headers={"Accept-Language": "ja"})
        assert response.status_code == 200
        assert "配信を停止する" in response.text and 'method="post"' in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in response.headers
    assert (await service.membership(list_id, "u@example.jp")).status == "subscribed"


async def test_one_click_post_without_cookies(
    service: ListService, client: httpx.AsyncClient
) -> None:
    """The RFC 8058 POST unsubscribes with no cookie, answers 200 and does not redirect."""
    list_id, _, path = await _member(service)
    response = await client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and not response.is_redirect
    assert not client.cookies
    member = await service.membership(list_id, "u@example.jp")
    assert member.status == "unsubscribed"
    history = await service.history("u@example.jp")
    assert history[0]["kind"] == "unsubscribed"
    assert "one_click" in history[0]["detail"] and "203.0.113.9" in history[0]["detail"]
    again = await client.post(path, content=b"List-Unsubscribe=One-Click")
    assert again.status_code == 200


async def test_one_click_multipart_body(service: ListService, client: httpx.AsyncClient) -> None:
    """A multipart/form-data one-click body works too."""
    list_id, _, path = await _member(service)
    response = await client.post(path, files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert (await service.membership(list_id, "u@example.jp")).status == "unsubscribed"


async def test_page_button_post_in_english(service: ListService, client: httpx.AsyncClient) -> None:
    """The page's own button (empty body) unsubscribes; ?lang=en gives English."""
    list_id, _, path = await _member(service)
    response = await client.post(path + "?lang=en")
    assert "You are unsubscribed" in response.text and 'lang="en"' in response.text
    assert (await service.membership(list_id, "u@example.jp")).status == "unsubscribed"


async def test_tampered_token_is_refused(service: ListService, client: httpx.AsyncClient) -> None:
    """A tampered token gets 400 on GET and POST and changes nothing."""
    list_id, _, path = await _member(service)
    bad = path[:-1] + ("a" if path[-1] != "a" else "b")
    assert (await client.get(bad)).status_code == 400
    response = await client.post(bad, content=b"List-Unsubscribe=One-Click")
    assert response.status_code == 400 and "無効" in response.text
    assert (await service.membership(list_id, "u@example.jp")).status == "subscribed"


async def test_double_opt_in_pages(service: ListService, client: httpx.AsyncClient) -> None:
    """GET of the confirmation link shows a button; only the POST confirms."""
    lst = await make_list(service, opt_in="double")
    member = await service.add_subscriber(lst.id, "d@example.jp", optin=OptIn("form"))
    path = service.confirmation_url(lst.id, member.subscriber.id).removeprefix(
        "https://news.example.jp"
    )
    assert (await client.get(path)).status_code == 200
    assert (await service.membership(lst.id, "d@example.jp")).status == "unconfirmed"
    response = await client.post(path, headers={"Accept-Language": "en-US,en;q=0.9,ja;q=0.5"})
    assert response.status_code == 200 and "Subscription confirmed" in response.text
    assert (await service.membership(lst.id, "d@example.jp")).status == "subscribed"


async def test_signup_form(service: ListService, client: httpx.AsyncClient) -> None:
    """The sign-up form records the opt-in with the client address; bad input is a 400."""
    lst = await make_list(service, description="<b>毎週</b>のお知らせ")
    page = await client.get("/subscribe/news")
    assert "&lt;b&gt;毎週" in page.text  # escaped
    response = await client.post("/subscribe/news", data={"email": "f@example.jp", "name": "藤井"})
    assert response.status_code == 200 and "f@example.jp" in response.text
    member = await service.membership(lst.id, "f@example.jp")
    assert member.optin_method == "form" and member.optin_ip == "203.0.113.9"
    assert member.subscriber.name == "藤井"
    bad = await client.post("/subscribe/news", data={"email": "nope"})
    assert bad.status_code == 400
    assert (await client.get("/subscribe/missing")).status_code == 404
