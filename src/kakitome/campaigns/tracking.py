"""Tracking links and the open pixel, signed so that our redirect is never an open one.

What it trusts: only the key (``campaigns.link_secret``, or 32 random bytes made on
first use in ``<data_dir>/campaign-links.secret``, mode 0600; every process that makes or
follows links must share it). A token arrives from anyone on the internet: it is checked
with HMAC-SHA256 in constant time before anything in it is believed, and a click target
must be an absolute ``http``/``https`` URL even when the MAC is right.

Token: ``base64url(payload) "." base64url(mac)``, with payload ``<ref>:<subscriber id>``
(open) or ``<ref>:<subscriber id>:<url>`` (click) and a 128-bit MAC under a key per kind,
so an open token is never a valid click token. ``ref`` names what was sent: ``c<id>`` for
a campaign, ``s<id>`` for a step of a sequence. The URL travels in the token (personalised
links work without a table of links); tokens are long, but only the HTML part carries them.

Which links are rewritten: ``<a href>`` with an ``http``/``https`` URL in the HTML part,
except the unsubscribe link (a link scanner following a tracking redirect must not land
on an unsubscribe page that counts as a click — and people must be able to read where it
goes) and links marked ``data-notrack``. The text part keeps the plain URLs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kakitome.config import Settings
from kakitome.errors import ConfigError, InputError

__all__ = [
    "SECRET_FILE_NAME",
    "LinkSigner",
    "TrackedClick",
    "TrackedOpen",
    "TrackingTokenError",
    "safe_redirect_target",
]

SECRET_FILE_NAME = "campaign-links.secret"
_MAC_BYTES = 16
_MAX_TOKEN = 8_192
_REF = re.compile(r"[cs][0-9]{1,18}")
_ANCHOR_HREF = re.compile(
    r"""(<a\b[^>]*?\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE | re.DOTALL
)


class TrackingTokenError(InputError):
    """A tracking token that is malformed or does not carry our signature."""


@dataclass(frozen=True, slots=True)
class TrackedOpen:
    ref: str
    subscriber_id: int


@dataclass(frozen=True, slots=True)
class TrackedClick:
    ref: str
    subscriber_id: int
    url: str


def safe_redirect_target(url: str) -> bool:
    """An absolute http(s) URL with a host and nothing that could split a header."""
    if not url or len(url) > 4096 or re.search(r"[\x00-\x20\x7f]", url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


class LinkSigner:
    """Make and check tracking tokens; rewrite the links of an HTML body."""

    def __init__(self, secret: bytes, base_url: str) -> None:
        if len(secret) < 16:
            raise ConfigError("the campaign link secret must be at least 16 bytes")
        self._click_key = hmac.new(secret, b"kakitome/campaigns/click", hashlib.sha256).digest()
        self._open_key = hmac.new(secret, b"kakitome/campaigns/open", hashlib.sha256).digest()
        self.base_url = base_url.rstrip("/")

    def __repr__(self) -> str:  # never the secret
        return f"LinkSigner(base_url={self.base_url!r})"

    @classmethod
    def from_settings(cls, settings: Settings, base_url: str) -> LinkSigner:
        secret = settings.campaigns.link_secret
        if secret is not None:
            return cls(secret.get_secret_value().encode("utf-8"), base_url)
        return cls(_read_or_make_secret(settings.data_dir / SECRET_FILE_NAME), base_url)

    # -- making ----------------------------------------------------------------------

    def open_token(self, ref: str, subscriber_id: int) -> str:
        return _seal(self._open_key, f"{ref}:{subscriber_id}")

    def click_token(self, ref: str, subscriber_id: int, url: str) -> str:
        if not safe_redirect_target(url):
            raise InputError(f"not a trackable link: {url!r}")
        return _seal(self._click_key, f"{ref}:{subscriber_id}:{url}")

    def open_url(self, ref: str, subscriber_id: int) -> str:
        return f"{self.base_url}/t/o/{self.open_token(ref, subscriber_id)}.gif"

    def click_url(self, ref: str, subscriber_id: int, url: str) -> str:
        return f"{self.base_url}/t/c/{self.click_token(ref, subscriber_id, url)}"

    def rewrite_html(
        self, body: str, ref: str, subscriber_id: int, *, keep: frozenset[str] = frozenset()
    ) -> str:
        """``body`` with its http(s) anchors pointing at signed redirects (URLs in
        ``keep`` and anchors with ``data-notrack`` untouched) and an open pixel before
        ``</body>`` (or at the end)."""

        def replace(match: re.Match[str]) -> str:
            quoted = match.group(2) if match.group(2) is not None else match.group(3)
            url = html.unescape(quoted).strip()
            if "data-notrack" in match.group(1).lower() or url in keep:
                return match.group(0)
            if not safe_redirect_target(url):
                return match.group(0)
            return f'{match.group(1)}"{html.escape(self.click_url(ref, subscriber_id, url))}"'

        body = _ANCHOR_HREF.sub(replace, body)
        pixel = (
            f'<img src="{html.escape(self.open_url(ref, subscriber_id))}" width="1" height="1" '
            'alt="" style="border:0;width:1px;height:1px">'
        )
        index = body.lower().rfind("</body>")
        if index >= 0:
            return body[:index] + pixel + body[index:]
        return body + pixel

    # -- checking --------------------------------------------------------------------

    def check_open(self, token: str) -> TrackedOpen:
        payload = _open(self._open_key, token)
        ref, sep, subscriber = payload.partition(":")
        if not sep or not _REF.fullmatch(ref) or not subscriber.isdigit():
            raise TrackingTokenError("malformed tracking token")
        return TrackedOpen(ref, int(subscriber))

    def check_click(self, token: str) -> TrackedClick:
        payload = _open(self._click_key, token)
        parts = payload.split(":", 2)
        if len(parts) != 3 or not _REF.fullmatch(parts[0]) or not parts[1].isdigit():
            raise TrackingTokenError("malformed tracking token")
        if not safe_redirect_target(parts[2]):
            raise TrackingTokenError("the link target is not an http(s) URL")
        return TrackedClick(parts[0], int(parts[1]), parts[2])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise TrackingTokenError("malformed tracking token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise TrackingTokenError("malformed tracking token") from exc


def _seal(key: bytes, payload: str) -> str:
    data = payload.encode("utf-8")
    mac = hmac.new(key, data, hashlib.sha256).digest()[:_MAC_BYTES]
    return f"{_b64(data)}.{_b64(mac)}"


def _open(key: bytes, token: str) -> str:
    if len(token) > _MAX_TOKEN or token.count(".") != 1:
        raise TrackingTokenError("malformed tracking token")
    body, _, given = token.partition(".")
    data = _unb64(body)
    expected = hmac.new(key, data, hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(expected, _unb64(given)):
        raise TrackingTokenError("the tracking token's signature does not match")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:  # pragma: no cover (only we sign payloads)
        raise TrackingTokenError("malformed tracking token") from exc


def _read_or_make_secret(path: Path) -> bytes:
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two processes starting at once cannot both write a secret.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create the campaign link secret {path}: {exc}") from None
        else:
            try:
                os.write(fd, base64.b64encode(secrets.token_bytes(32)) + b"\n")
            finally:
                os.close(fd)
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the campaign link secret {path}: {exc}") from None
    if len(data) < 16:
        raise ConfigError(f"the campaign link secret file {path} holds fewer than 16 bytes")
    return data
