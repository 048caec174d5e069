"""The DNS records a sending domain needs, as a zone-file snippet and as JSON.

For ``example.com`` with return-path label ``bounce`` (the defaults):

- DKIM: one TXT per published key, ``<selector>._domainkey.example.com`` (RSA and Ed25519;
  during a rotation the pending and the retiring keys too);
- SPF at ``example.com``: the configured sending IPs and/or include, ending ``~all`` (the
  domain may also send from elsewhere; we advise merging rather than a second record);
- DMARC at ``_dmarc.example.com``: ``p=none`` with ``rua`` to us, and advice on moving to
  ``quarantine`` and ``reject`` once the reports show only our mail;
- the return-path domain ``bounce.example.com``: an MX to our bounce host and an SPF record
  ending ``-all`` (only we send with that envelope domain);
- receiving: ``_mta-sts`` and ``_smtp._tls`` (TLS-RPT) records, optional;
- when the DMARC reports go to another organisation's domain, the authorisation record it
  must publish (RFC 7489 §7.1);
- PTR advice for each sending IP: its reverse name should point at our HELO name, which
  should resolve back to it (forward-confirmed reverse DNS).

Every text is given in English and Japanese (``en``/``ja``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kakitome.auth.dkim_keys import zone_file_record
from kakitome.config import Settings
from kakitome.domains.names import DomainName
from kakitome.domains.repository import ACTIVE, PENDING, RETIRING, DomainRow

__all__ = [
    "Advice",
    "DomainRecords",
    "PublishRecord",
    "dmarc_rua",
    "domain_records",
    "return_path_mx_host",
    "spf_mechanisms",
]

# Purposes, also the codes verify reports against.
DKIM = "dkim"
SPF = "spf"
DMARC = "dmarc"
RETURN_PATH_MX = "return_path_mx"
RETURN_PATH_SPF = "return_path_spf"
MTA_STS = "mta_sts"
TLS_RPT = "tls_rpt"
DMARC_REPORT_AUTH = "dmarc_report_authorization"


@dataclass(frozen=True, slots=True)
class PublishRecord:
    """One record to publish. ``name`` is absolute, A-labels, without the final dot;
    ``value`` is the whole TXT value (unsplit) or ``"<preference> <host>"`` for MX."""

    purpose: str
    name: str
    type: str
    value: str
    required: bool
    en: str
    ja: str
    selector: str | None = None
    key_state: str | None = None

    def zone_line(self) -> str:
        if self.type == "TXT":
            return zone_file_record(self.name + ".", self.value)
        preference, _, host = self.value.partition(" ")
        return f"{self.name}. IN MX {preference} {host}."

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "purpose": self.purpose,
            "name": self.name,
            "type": self.type,
            "value": self.value,
            "required": self.required,
            "note": {"en": self.en, "ja": self.ja},
        }
        if self.selector is not None:
            out["selector"] = self.selector
            out["key_state"] = self.key_state
        return out


@dataclass(frozen=True, slots=True)
class Advice:
    code: str
    en: str
    ja: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "en": self.en, "ja": self.ja}


@dataclass(frozen=True, slots=True)
class DomainRecords:
    domain: DomainName
    return_path: str
    records: tuple[PublishRecord, ...]
    ptr: tuple[tuple[str, str, str], ...]  # (ip, reverse name, expected host)
    advice: tuple[Advice, ...]

    def zone_file(self) -> str:
        lines = [f"; Kakitome: DNS records for {self.domain.display()}"]
        for record in self.records:
            optional = "" if record.required else " (optional)"
            lines.append(f"; {record.en}{optional}")
            lines.append(record.zone_line())
        if self.ptr:
            lines.append("; PTR records are set by whoever runs the IP addresses (your host):")
            for _ip, reverse, host in self.ptr:
                lines.append(f";   {reverse}. IN PTR {host}.")
        for advice in self.advice:
            lines.append(f"; {advice.en}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain.ascii,
            "unicode": self.domain.unicode,
            "return_path": self.return_path,
            "records": [r.to_dict() for r in self.records],
            "ptr": [{"ip": ip, "name": rev, "value": host} for ip, rev, host in self.ptr],
            "advice": [a.to_dict() for a in self.advice],
            "zone_file": self.zone_file(),
        }


def spf_mechanisms(settings: Settings) -> list[str]:
    """The SPF terms for our sending: ip4/ip6 per sending IP, the include, or else
    ``a:<helo name>``."""
    terms = []
    for ip in settings.domains.sending_ips:
        version = ipaddress.ip_address(ip).version
        terms.append(f"ip{version}:{ip}")
    if settings.domains.spf_include:
        terms.append(f"include:{settings.domains.spf_include}")
    if not terms:
        terms.append(f"a:{settings.delivery.helo_hostname}")
    return terms


def return_path_mx_host(settings: Settings) -> str:
    return (settings.domains.return_path_mx or settings.delivery.helo_hostname).rstrip(".")


def dmarc_rua(settings: Settings, return_path: str) -> str:
    return settings.domains.dmarc_rua or f"dmarc@{return_path}"


def tlsrpt_rua(settings: Settings, return_path: str) -> str:
    return settings.domains.tlsrpt_rua or f"tls-reports@{return_path}"


def domain_records(
    domain: DomainName, row: DomainRow, settings: Settings, *, now: float
) -> DomainRecords:
    """Everything to publish for ``row``, from the settings as they are now."""
    name = domain.ascii
    rp = row.return_path
    records: list[PublishRecord] = []
    for key in row.keys_in(ACTIVE, PENDING, RETIRING):
        state_en = {
            ACTIVE: "signing now",
            PENDING: "next key, publish before it takes over",
            RETIRING: "replaced; keep until it is retired",
        }[key.state]
        state_ja = {
            ACTIVE: "署名に使用中",
            PENDING: "次の鍵。切り替え前に公開してください",
            RETIRING: "交代済み。廃止まで残してください",
        }[key.state]
        records.append(
            PublishRecord(
                DKIM,
                f"{key.selector}._domainkey.{name}",
                "TXT",
                key.public_txt,
                True,
                f"DKIM {key.key_type} key {key.selector} ({state_en})",
                f"DKIM {key.key_type} 鍵 {key.selector}（{state_ja}）",
                selector=key.selector,
                key_state=key.state,
            )
        )
    mechanisms = " ".join(spf_mechanisms(settings))
    records.append(
        PublishRecord(
            SPF,
            name,
            "TXT",
            f"v=spf1 {mechanisms} ~all",
            True,
            "SPF for the From domain: if it has an SPF record already, add "
            f"'{mechanisms}' to it instead of publishing a second one",
            f"From ドメインの SPF。既に SPF レコードがある場合は二つ目を作らず、"
            f"「{mechanisms}」を既存のレコードに追加してください",
        )
    )
    rua = dmarc_rua(settings, rp)
    records.append(
        PublishRecord(
            DMARC,
            f"_dmarc.{name}",
            "TXT",
            f"v=DMARC1; p=none; rua=mailto:{rua}",
            True,
            "DMARC: start with p=none and read the aggregate reports",
            "DMARC：まず p=none で始め、集計レポートを確認してください",
        )
    )
    mx_host = return_path_mx_host(settings)
    records.append(
        PublishRecord(
            RETURN_PATH_MX,
            rp,
            "MX",
            f"10 {mx_host}",
            True,
            f"Return path {rp}: bounces come back to us through this MX",
            f"リターンパス {rp}：バウンスはこの MX を通って戻ってきます",
        )
    )
    records.append(
        PublishRecord(
            RETURN_PATH_SPF,
            rp,
            "TXT",
            f"v=spf1 {mechanisms} -all",
            True,
            f"SPF for the return path {rp} (only we send with it)",
            f"リターンパス {rp} の SPF（このドメインで送信するのは当サービスのみ）",
        )
    )
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
    records.append(
        PublishRecord(
            MTA_STS,
            f"_mta-sts.{name}",
            "TXT",
            f"v=STSv1; id={stamp}",
            False,
            f"MTA-STS for mail you receive: also serve the policy at "
            f"https://mta-sts.{name}/.well-known/mta-sts.txt; change id when it changes",
            f"受信メールの MTA-STS：https://mta-sts.{name}/.well-known/mta-sts.txt で"
            "ポリシーも公開し、変更のたびに id を更新してください",
        )
    )
    records.append(
        PublishRecord(
            TLS_RPT,
            f"_smtp._tls.{name}",
            "TXT",
            f"v=TLSRPTv1; rua=mailto:{tlsrpt_rua(settings, rp)}",
            False,
            "TLS-RPT: senders report TLS failures of mail to you",
            "TLS-RPT：送信側があなた宛てメールの TLS 失敗を報告します",
        )
    )
    rua_domain = rua.rpartition("@")[2].lower()
    if rua_domain != name and not rua_domain.endswith("." + name):
        records.append(
            PublishRecord(
                DMARC_REPORT_AUTH,
                f"{name}._report._dmarc.{rua_domain}",
                "TXT",
                "v=DMARC1",
                True,
                f"In the zone of {rua_domain}: allows it to receive {name}'s DMARC reports",
                f"{rua_domain} のゾーンに公開：{name} の DMARC レポートの受信を許可します",
            )
        )
    helo = settings.delivery.helo_hostname
    ptr = tuple(
        (ip, ipaddress.ip_address(ip).reverse_pointer, helo) for ip in settings.domains.sending_ips
    )
    advice = [
        Advice(
            "dmarc_progression",
            "After two to four weeks of DMARC reports that show only mail you know, move "
            "to p=quarantine, then to p=reject.",
            "既知のメールだけが載った DMARC レポートを 2〜4 週間確認したら、p=quarantine に、"
            "その後 p=reject に移行してください。",
        ),
        Advice(
            "ptr",
            f"Ask your host to set the PTR of each sending IP to {helo}, and make {helo} "
            "resolve to those IPs (forward-confirmed reverse DNS).",
            f"送信 IP ごとの PTR を {helo} にするようホスティング事業者に依頼し、{helo} が"
            "その IP を指すようにしてください（正引き・逆引きの一致）。",
        ),
    ]
    if not settings.domains.sending_ips and not settings.domains.spf_include:
        advice.append(
            Advice(
                "no_sending_ips",
                "No sending IPs are configured (domains.sending_ips); SPF names "
                f"'a:{helo}' instead. Configure them for exact records and checks.",
                "送信 IP（domains.sending_ips）が未設定のため、SPF は"
                f"「a:{helo}」を使います。正確なレコードと検査のために設定してください。",
            )
        )
    return DomainRecords(domain, rp, tuple(records), ptr, tuple(advice))
