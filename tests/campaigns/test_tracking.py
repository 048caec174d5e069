"""Tracking endpoints: a signed click redirects and is counted; a tampered one is 400, never
a redirect; the pixel is a GIF."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from kakitome.campaigns.store import CampaignStore
from kakitome.campaigns.tracking import LinkSigner
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.web.tracking import PIXEL, router

from .conftest import LINK_KEY, make_settings


async def test_click_redirects_and_tamper_is_refused(store: Database, tmp_path: object) -> None:
    """A good token redirects to its URL; a changed URL or MAC gets 400 without Location."""
    signer = LinkSigner(LINK_KEY, "https://news.example.jp")
    # The services' campaign signer makes and checks the links: the same key as ``signer``.
    campaigns = {"batch_size": 100, "link_secret": LINK_KEY.decode()}
    settings = make_settings(tmp_path, campaigns=campaigns)  # type: ignore[arg-type]
    app = FastAPI()
    app.state.services = build_services(settings, store, signing=None)
    app.include_router(router)
    token = signer.click_token("c7", 42, "https://shop.example.jp/a?b=1")
    forged = LinkSigner(b"another-key-0123456789abcdef", "x").click_token(
        "c7", 42, "https://evil.example/"
    )
    body, _, mac = token.partition(".")
    swapped = f"{forged.partition('.')[0]}.{mac}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://news.example.jp") as client:
        ok = await client.get(f"/t/c/{token}")
        assert ok.status_code == 302 and ok.headers["location"] == "https://shop.example.jp/a?b=1"
        for bad in (forged, swapped, body, token[:-2] + "AA", "x.y", f"{token}.z"):
            refused = await client.get(f"/t/c/{bad}")
            assert refused.status_code == 400 and "location" not in refused.headers
        pixel = await client.get(f"/t/o/{signer.open_token('c7', 42)}.gif")
        assert pixel.status_code == 200 and pixel.content == PIXEL
        assert (await client.get("/t/o/garbage.gif")).status_code == 400
    counts = await CampaignStore(store).campaign_stats(7)
    assert counts["activity"] == {"click": (1, 1), "open": (1, 1)}


def test_only_http_links_are_signed_or_followed() -> None:
    """javascript: and data: targets are never made into tracking links."""
    signer = LinkSigner(LINK_KEY, "https://news.example.jp")
    html = (
        '<a href="javascript:alert(1)">x</a><a href="https://a.example/?q=1&amp;r=2">y</a>'
        '<a data-notrack href="https://b.example/">z</a>'
    )
    out = signer.rewrite_html(html, "c1", 5)
    assert 'href="javascript:alert(1)"' in out and 'href="https://b.example/"' in out
    assert out.count("/t/c/") == 1
    token = out.split("/t/c/")[1].split('"')[0]
    assert signer.check_click(token).url == "https://a.example/?q=1&r=2"
