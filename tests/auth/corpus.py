"""A corpus of messages that stress DKIM canonicalisation, each a (name, CRLF bytes) pair.

Japanese mail in its real forms (RFC 2047 subjects in UTF-8 and ISO-2022-JP, UTF-8 8-bit
and ISO-2022-JP bodies), base64 and quoted-printable, long and folded headers, dots at line
starts, trailing blank lines and whitespace, attachments, multipart/alternative.
"""

from __future__ import annotations

from email.header import Header
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP

FROM = "ニュース配信 <news@example.com>"
FROM_2047 = Header("ニュース配信", "utf-8").encode() + " <news@example.com>"
BASE_HEADERS = (
    b"From: =?UTF-8?B?44OL44Ol44O844K56YWN5L+h?= <news@example.com>\r\n"
    b"To: =?UTF-8?B?5bGx55Sw5aSq6YOO5qeY?= <taro@example.jp>\r\n"
    b"Date: Fri, 27 Nov 2026 09:00:00 +0900\r\n"
    b"Message-ID: <corpus@example.com>\r\n"
)

JAPANESE_TEXT = (
    "山田太郎様\n\nいつもご利用いただき、ありがとうございます。\n"
    "本日より冬のセールを開催いたします。　全角スペースもそのままです。\n"
    "ご不明な点がございましたら、お気軽にお問い合わせください。\n\n"
    "────────────────\n株式会社カキトメ　配信事務局\n"
)


def _raw(headers: bytes, body: bytes) -> bytes:
    return BASE_HEADERS + headers + b"\r\n" + body


def _email(msg: EmailMessage | MIMEMultipart | MIMEText) -> bytes:
    return msg.as_bytes(policy=SMTP)


def corpus() -> list[tuple[str, bytes]]:
    """Every message of the corpus, named."""
    cases: list[tuple[str, bytes]] = []

    cases.append(("plain-ascii", _raw(
        b"Subject: Hello\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n",
        b"Hello.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n",
    )))  # fmt: skip

    utf8 = EmailMessage(policy=SMTP)
    utf8["From"] = FROM
    utf8["To"] = "山田太郎様 <taro@example.jp>"
    utf8["Subject"] = (
        "【重要】冬のセールのご案内：本日より全品20%オフ、送料無料キャンペーンも同時開催"
    )
    utf8["Date"] = "Fri, 27 Nov 2026 09:00:00 +0900"
    utf8["Message-ID"] = "<utf8@example.com>"
    utf8.set_content(JAPANESE_TEXT, charset="utf-8", cte="8bit")
    cases.append(("japanese-utf8-8bit", _email(utf8)))

    b64 = EmailMessage(policy=SMTP)
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        if utf8[name] is not None:
            b64[name] = utf8[name]
    b64.set_content(JAPANESE_TEXT * 3, charset="utf-8", cte="base64")
    cases.append(("japanese-utf8-base64", _email(b64)))

    iso = MIMEText(JAPANESE_TEXT.replace("　", " "), "plain", "iso-2022-jp")
    iso["From"] = FROM_2047
    iso["To"] = "taro@example.jp"
    iso["Subject"] = Header("お知らせ：メンテナンスのため一時停止します", "iso-2022-jp").encode()
    iso["Date"] = "Fri, 27 Nov 2026 09:00:00 +0900"
    iso["Message-ID"] = "<iso2022jp@example.com>"
    cases.append(("japanese-iso-2022-jp", _email(iso)))

    qp = EmailMessage(policy=SMTP)
    qp["From"] = FROM
    qp["To"] = "taro@example.jp"
    qp["Subject"] = "quoted-printable"
    qp.set_content(JAPANESE_TEXT, charset="utf-8", cte="quoted-printable")
    cases.append(("japanese-quoted-printable", _email(qp)))

    cases.append(("dots-at-line-start", _raw(
        b"Subject: dots\r\n",
        b".\r\n..\r\n.leading dot\r\n..two dots\r\nend\r\n.\r\n",
    )))  # fmt: skip

    cases.append(("trailing-blank-lines", _raw(
        b"Subject: trailing blank lines\r\n",
        b"text\r\n\r\n\r\n\r\n\r\n",
    )))  # fmt: skip

    cases.append(("whitespace", _raw(
        b"Subject:   spaced \t out   \r\nX-Tabs:\tvalue\t with\ttabs \t\r\n",
        b"  leading spaces\r\ntrailing spaces   \r\ntab\there\t\r\n \t \r\nmiddle  \t  run\r\n",
    )))  # fmt: skip

    cases.append(("no-final-crlf", _raw(b"Subject: no final CRLF\r\n", b"last line")))
    cases.append(("empty-body", _raw(b"Subject: empty body\r\n", b"")))
    cases.append(("only-blank-lines", _raw(b"Subject: blank\r\n", b"\r\n\r\n")))

    recipients = ", ".join(f"Person {i} <person{i}@example.net>" for i in range(40))
    long_to = Header(recipients, header_name="Cc").encode(linesep="\r\n", maxlinelen=76)
    cases.append(("long-folded-headers", _raw(
        b"Subject: =?UTF-8?B?44GT44KM44Gv6ZW344GE5Lu25ZCN44Gn44GZ44CC5oqY44KK6L+U44GV44KM?=\r\n"
        b" =?UTF-8?B?44G+44GZ44CC5oqY44KK6L+U44GX44Gu6KGM44Gn44GZ?=\r\n"
        b"Cc: " + long_to.encode() + b"\r\n"
        b"List-Unsubscribe: <https://example.com/u/eyJsaXN0IjoxLCJzIjoiYWJjZGVmZ2hpamts"
        b"bW5vcHFyc3R1dnd4eXoifQ>,\r\n\t<mailto:unsub@example.com?subject=unsubscribe>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"Feedback-ID: campaign42:list7:kakitome\r\n"
        b"X-Long: " + b"a" * 900 + b"\r\n",
        b"body\r\n",
    )))  # fmt: skip

    alternative = MIMEMultipart("alternative")
    alternative["From"] = FROM_2047
    alternative["To"] = "taro@example.jp"
    alternative["Subject"] = Header("テキストとHTML", "utf-8").encode()
    alternative["Reply-To"] = "support@example.com"
    alternative.attach(MIMEText(JAPANESE_TEXT, "plain", "utf-8"))
    html = "<html><body><p>" + JAPANESE_TEXT.replace("\n", "<br>\n") + "</p></body></html>"
    alternative.attach(MIMEText(html, "html", "utf-8"))
    cases.append(("multipart-alternative", _email(alternative)))

    mixed = MIMEMultipart("mixed")
    mixed["From"] = FROM_2047
    mixed["To"] = "taro@example.jp"
    mixed["Subject"] = Header("請求書（添付ファイルあり）", "iso-2022-jp").encode()
    mixed.attach(MIMEText("請求書を添付いたします。\n", "plain", "utf-8"))
    attachment = MIMEApplication(bytes(range(256)) * 20, "pdf")
    attachment.add_header(
        "Content-Disposition", "attachment", filename=("utf-8", "", "請求書_2026年11月.pdf")
    )
    mixed.attach(attachment)
    cases.append(("attachment", _email(mixed)))

    return [(name, _crlf(data)) for name, data in cases]


def _crlf(data: bytes) -> bytes:
    """CRLF line endings throughout (the signer's input contract)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
