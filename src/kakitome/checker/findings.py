"""Findings: the catalog of every finding code, and the value a check produces.

A ``FindingSpec`` holds what never changes for a code: its severity, its message and its
remedy, in English and Japanese (``{placeholders}`` are filled from the finding's
``params``). A ``Finding`` is one occurrence: the code, the subject it is about (the domain,
an MX host, ``host[address]``), and the parameters. The CLI, the API and the web UI all
render findings from this one catalog, so they say the same thing.

docs/CHECKER.md lists the catalog; ``tests/checker/test_catalog.py`` keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    """From good to bad. ``ok`` findings say what is right, so a report shows both."""

    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {
    Severity.OK: 0,
    Severity.INFO: 1,
    Severity.WARNING: 2,
    Severity.ERROR: 3,
    Severity.CRITICAL: 4,
}


@dataclass(frozen=True, slots=True)
class FindingSpec:
    code: str
    severity: Severity
    category: str  # "dns", "smtp", "tls", "certificate", "dane", "mta-sts", "tls-rpt", ...
    message_en: str
    message_ja: str
    remedy_en: str = ""
    remedy_ja: str = ""


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding about one subject. ``severity`` may differ from the spec's default only
    where a check says why (for example the same code on a backup MX)."""

    code: str
    subject: str
    params: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None

    @property
    def spec(self) -> FindingSpec:
        return CATALOG[self.code]

    @property
    def effective_severity(self) -> Severity:
        return self.severity or self.spec.severity

    def message(self, lang: str = "en") -> str:
        spec = self.spec
        text = spec.message_ja if lang == "ja" else spec.message_en
        return text.format_map(_Missing(subject=self.subject, **self.params))

    def remedy(self, lang: str = "en") -> str:
        spec = self.spec
        text = spec.remedy_ja if lang == "ja" else spec.remedy_en
        return text.format_map(_Missing(subject=self.subject, **self.params))

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.effective_severity.value,
            "category": self.spec.category,
            "subject": self.subject,
            "message": {"en": self.message("en"), "ja": self.message("ja")},
            "remedy": {"en": self.remedy("en"), "ja": self.remedy("ja")},
            "params": self.params,
        }


CATALOG: dict[str, FindingSpec] = {}


def _spec(
    code: str,
    severity: Severity,
    category: str,
    en: str,
    ja: str,
    remedy_en: str = "",
    remedy_ja: str = "",
) -> None:
    if code in CATALOG:
        raise ValueError(f"finding code {code} defined twice")
    CATALOG[code] = FindingSpec(code, severity, category, en, ja, remedy_en, remedy_ja)


S = Severity

# -- DNS and MX ---------------------------------------------------------------------------
_spec(
    "DOMAIN_NOT_FOUND", S.CRITICAL, "dns",
    "The domain {subject} does not exist (NXDOMAIN).",
    "ドメイン {subject} は存在しません (NXDOMAIN)。",
    "Check the spelling of the address; remove recipients at this domain from the list.",
    "アドレスの綴りを確認し、このドメインの宛先はリストから削除してください。",
)
_spec(
    "DNS_FAILURE", S.CRITICAL, "dns",
    "The DNS lookup for {subject} failed: {error}.",
    "{subject} の DNS 問い合わせに失敗しました: {error}。",
    "The domain's nameservers do not answer correctly (SERVFAIL or timeout); its owner must "
    "fix them. Mail to it is deferred until they do.",
    "ドメインのネームサーバーが正しく応答していません (SERVFAIL またはタイムアウト)。"
    "ドメイン管理者による修正が必要です。修正されるまで配送は保留されます。",
)
_spec(
    "NULL_MX", S.INFO, "dns",
    "{subject} publishes a null MX (RFC 7505): it accepts no mail.",
    "{subject} は null MX (RFC 7505) を公開しており、メールを受け付けません。",
    "Do not send to addresses at this domain; they bounce at once (5.1.10).",
    "このドメインのアドレスには送信しないでください。即座にエラー (5.1.10) になります。",
)
_spec(
    "IMPLICIT_MX", S.WARNING, "dns",
    "{subject} has no MX record; mail goes to the domain's own address records.",
    "{subject} には MX レコードがなく、ドメイン自身の A/AAAA レコードに配送されます。",
    "Publish an MX record naming the mail server explicitly.",
    "メールサーバーを明示する MX レコードを公開してください。",
)
_spec(
    "NO_MAIL_HOSTS", S.CRITICAL, "dns",
    "No mail exchanger of {subject} has an address: mail cannot be delivered.",
    "{subject} のどのメールサーバーにもアドレスがなく、配送できません。",
    "Publish A/AAAA records for the MX hosts, or fix the MX records.",
    "MX ホストの A/AAAA レコードを公開するか、MX レコードを修正してください。",
)
_spec(
    "MX_HOST_NO_ADDRESS", S.WARNING, "dns",
    "The MX host {subject} has no address records.",
    "MX ホスト {subject} にアドレスレコードがありません。",
    "Publish A/AAAA records for it or remove it from the MX set.",
    "A/AAAA レコードを公開するか、MX から外してください。",
)
# -- SMTP -------------------------------------------------------------------------------
_spec(
    "HOST_UNREACHABLE", S.ERROR, "smtp",
    "{subject} cannot be reached on port {port}: {error}.",
    "{subject} のポート {port} に接続できません: {error}。",
    "Make sure the mail server listens on port 25 and that no firewall blocks it.",
    "メールサーバーがポート 25 で待ち受け、ファイア"
    "ウォールで遮断されていないことを確認してください。",
)
_spec(
    "ALL_HOSTS_UNREACHABLE", S.CRITICAL, "smtp",
    "No mail server of {subject} accepted an SMTP session: mail cannot be delivered now.",
    "{subject} のどのメールサーバーも SMTP セッションを受け付けず、現在は配送できません。",
    "Bring at least one MX host up on port 25.",
    "少なくとも 1 台の MX ホストをポート 25 で稼働させてください。",
)
_spec(
    "SMTP_GREETING_REFUSED", S.ERROR, "smtp",
    "{subject} refused the session at its greeting: {banner}.",
    "{subject} は接続時の応答でセッションを拒否しました: {banner}。",
    "The server answers with an error instead of 220; check its load and access rules.",
    "サーバーが 220 ではなくエラーを返しています。負荷とアクセス制御を確認してください。",
)
_spec(
    "SMTP_OK", S.OK, "smtp",
    "{subject} greets with \"{banner}\" and offers: {extensions}.",
    "{subject} の応答は「{banner}」、拡張機能: {extensions}。",
)
_spec(
    "STARTTLS_NOT_OFFERED", S.CRITICAL, "tls",
    "{subject} does not offer STARTTLS: mail to it travels in plaintext.",
    "{subject} は STARTTLS を提供しておらず、メールは平文で送られます。",
    "Enable STARTTLS on the mail server with a certificate for its MX name "
    "(Postfix: smtpd_tls_security_level = may, smtpd_tls_chain_files).",
    "MX 名の証明書でメールサーバーの STARTTLS を有効にしてください "
    "(Postfix: smtpd_tls_security_level = may, smtpd_tls_chain_files)。",
)
_spec(
    "STARTTLS_FAILED", S.CRITICAL, "tls",
    "{subject} offers STARTTLS but no TLS session could be set up: {error}.",
    "{subject} は STARTTLS を提供していますが、TLS セッションを確立できません: {error}。",
    "Fix the server's TLS configuration (certificate and key files, protocol versions); "
    "senders fall back to plaintext or do not deliver at all.",
    "サーバーの TLS 設定 (証明書と鍵、プロトコルバージョン) を修正してください。"
    "送信側は平文に戻るか、配送しません。",
)
_spec(
    "STARTTLS_OK", S.OK, "tls",
    "{subject} negotiates {version} with {cipher}.",
    "{subject} は {version}、暗号スイート {cipher} で接続しました。",
)
_spec(
    "TLS_LEGACY_VERSION", S.WARNING, "tls",
    "{subject} still accepts {versions}.",
    "{subject} は今も {versions} を受け付けています。",
    "Disable TLS 1.0 and 1.1 (RFC 8996); accept TLS 1.2 and 1.3 only "
    "(Postfix: smtpd_tls_protocols = >=TLSv1.2).",
    "TLS 1.0 と 1.1 を無効にし (RFC 8996)、TLS 1.2 と 1.3 のみを受け付けてください "
    "(Postfix: smtpd_tls_protocols = >=TLSv1.2)。",
)
_spec(
    "TLS_NO_MODERN_VERSION", S.ERROR, "tls",
    "{subject} accepts neither TLS 1.2 nor TLS 1.3 (best: {version}).",
    "{subject} は TLS 1.2 も TLS 1.3 も受け付けません (最高: {version})。",
    "Upgrade the server's TLS library and enable TLS 1.2 and 1.3; senders that require "
    "TLS 1.2 (MTA-STS, DANE, mandatory TLS) cannot deliver.",
    "サーバーの TLS ライブラリを更新し TLS 1.2 と 1.3 を有効にしてください。"
    "TLS 1.2 を必須とする送信者 (MTA-STS、DANE、必須 TLS) は配送できません。",
)
_spec(
    "TLS13_NOT_SUPPORTED", S.INFO, "tls",
    "{subject} does not accept TLS 1.3.",
    "{subject} は TLS 1.3 を受け付けません。",
    "Enable TLS 1.3 for faster and stronger handshakes.",
    "より速く安全なハンドシェイクのため TLS 1.3 を有効にしてください。",
)
_spec(
    "WEAK_CIPHER", S.WARNING, "tls",
    "{subject} chose the cipher {cipher}, without forward secrecy or authenticated "
    "encryption.",
    "{subject} は前方秘匿性または認証付き暗号のない暗号スイート {cipher} を選びました。",
    "Prefer ECDHE with AES-GCM or ChaCha20-Poly1305.",
    "ECDHE と AES-GCM または ChaCha20-Poly1305 を優先してください。",
)
# -- certificate ---------------------------------------------------------------------------
_spec(
    "CERT_VERIFIED", S.OK, "certificate",
    "The certificate of {subject} is valid for {name} and chains to a trusted CA "
    "({days_left} days left).",
    "{subject} の証明書は {name} に有効で、信頼された"
    " CA につながっています (残り {days_left} 日)。",
)
_spec(
    "CERT_EXPIRED", S.ERROR, "certificate",
    "The certificate of {subject} expired on {not_after}.",
    "{subject} の証明書は {not_after} に期限切れになりました。",
    "Renew the certificate (automate it, for example with ACME) and reload the server.",
    "証明書を更新し (ACME などで自動化)、サーバーを再読み込みしてください。",
)
_spec(
    "CERT_NOT_YET_VALID", S.ERROR, "certificate",
    "The certificate of {subject} is not valid before {not_before}.",
    "{subject} の証明書は {not_before} まで有効になりません。",
    "Check the server's clock and the certificate's dates.",
    "サーバーの時刻と証明書の有効期間を確認してください。",
)
_spec(
    "CERT_EXPIRING", S.WARNING, "certificate",
    "The certificate of {subject} expires in {days_left} days ({not_after}).",
    "{subject} の証明書はあと {days_left} 日 ({not_after}) で期限切れになります。",
    "Renew it now; make renewal automatic.",
    "今すぐ更新し、更新を自動化してください。",
)
_spec(
    "CERT_SELF_SIGNED", S.ERROR, "certificate",
    "The certificate of {subject} is self-signed: senders cannot authenticate the server.",
    "{subject} の証明書は自己署名で、送信側はサーバーを認証できません。",
    "Use a certificate from a public CA (or publish a DANE-EE TLSA record for it).",
    "公的 CA の証明書を使うか、DANE-EE の TLSA レコードを公開してください。",
)
_spec(
    "CERT_UNTRUSTED", S.ERROR, "certificate",
    "The certificate of {subject} does not verify: {error}.",
    "{subject} の証明書を検証できません: {error}。",
    "Serve the full chain (leaf and intermediates) from a public CA.",
    "公的 CA の完全なチェーン (サーバー証明書と中間証明書) を提示してください。",
)
_spec(
    "CERT_NAME_MISMATCH", S.ERROR, "certificate",
    "The certificate of {subject} is for {names}, not for the MX name {host}.",
    "{subject} の証明書は {names} 用で、MX 名 {host} と一致しません。",
    "Issue the certificate for the MX host name (every name in the MX set).",
    "MX ホスト名 (MX のすべての名前) で証明書を発行してください。",
)
_spec(
    "CERT_WEAK_KEY", S.ERROR, "certificate",
    "The certificate of {subject} has a weak key: {key_type} {key_bits} bits.",
    "{subject} の証明書の鍵は弱いです: {key_type} {key_bits} ビット。",
    "Use RSA of at least 2048 bits or an EC P-256 key.",
    "2048 ビット以上の RSA または EC P-256 の鍵を使ってください。",
)
# -- REQUIRETLS ------------------------------------------------------------------------------
_spec(
    "REQUIRETLS_OFFERED", S.OK, "requiretls",
    "{subject} offers REQUIRETLS (RFC 8689).",
    "{subject} は REQUIRETLS (RFC 8689) を提供しています。",
)
_spec(
    "REQUIRETLS_NOT_OFFERED", S.INFO, "requiretls",
    "{subject} does not offer REQUIRETLS: messages that demand it cannot be delivered there.",
    "{subject} は REQUIRETLS を提供しておらず、それを要求するメッセージは配送できません。",
    "Enable REQUIRETLS if the server software supports it.",
    "サーバーソフトウェアが対応していれば REQUIRETLS を有効にしてください。",
)
_spec(
    "REQUIRETLS_IN_PLAINTEXT", S.WARNING, "requiretls",
    "{subject} advertises REQUIRETLS before STARTTLS, which RFC 8689 §4.1 forbids.",
    "{subject} は STARTTLS の前に REQUIRETLS を広告しており、RFC 8689 §4.1 に反します。",
    "Advertise REQUIRETLS only inside TLS.",
    "REQUIRETLS は TLS の内側でのみ広告してください。",
)
# -- reverse DNS (T39) -----------------------------------------------------------------------
_spec(
    "PTR_MISSING", S.INFO, "reverse-dns",
    "The address {subject} has no PTR record.",
    "アドレス {subject} には PTR レコードがありません。",
    "Ask the address's owner (ISP/hosting) for a PTR naming the mail host.",
    "アドレスの管理者 (ISP やホスティング事業者) にメールホスト名の PTR を依頼してください。",
)
_spec(
    "PTR_NOT_CONFIRMED", S.INFO, "reverse-dns",
    "The PTR of {subject} ({names}) does not resolve back to it (no forward-confirmed "
    "reverse DNS).",
    "{subject} の PTR ({names}) は元のアドレスに解決されません (FCrDNS 不成立)。",
    "Make the PTR name's A/AAAA records include the address.",
    "PTR 名の A/AAAA レコードにそのアドレスを含めてください。",
)
_spec(
    "PTR_OK", S.OK, "reverse-dns",
    "{subject} has forward-confirmed reverse DNS: {name}.",
    "{subject} の逆引きは正引きで確認されています: {name}。",
)
_spec(
    "BANNER_NAME_MISMATCH", S.INFO, "reverse-dns",
    "{subject} calls itself {banner_name}, which is neither its PTR name ({ptr}) nor a "
    "name on its certificate.",
    "{subject} は {banner_name} と名乗っていま"
    "すが、PTR 名 ({ptr}) でも証明書の名前でもありません。",
    "Make the greeting name, the PTR name and the certificate agree.",
    "応答のホスト名、PTR 名、証明書の名前を一致させてください。",
)
# -- DANE ---------------------------------------------------------------------------------
_spec(
    "DANE_ABSENT", S.INFO, "dane",
    "{subject} has no TLSA records (no DANE).",
    "{subject} には TLSA レコードがありません (DANE なし)。",
    "Sign the zone with DNSSEC and publish a \"3 1 1\" TLSA record for the MX host: DANE "
    "protects against downgrade and certificate substitution.",
    "ゾーンを DNSSEC で署名し、MX ホストに「3 1 1」の TLSA レコードを公開してください。"
    "DANE はダウングレードと証明書のすり替えを防ぎます。",
)
_spec(
    "DANE_INSECURE", S.WARNING, "dane",
    "{subject} has TLSA records, but they are not DNSSEC-validated: senders ignore them.",
    "{subject} には TLSA レコードがありますが、DNSSEC で検証されておらず送信側は無視します。",
    "Sign the zone (and the MX host's zone) with DNSSEC.",
    "ゾーン (と MX ホストのゾーン) を DNSSEC で署名してください。",
)
_spec(
    "DANE_LOOKUP_FAILED", S.ERROR, "dane",
    "The TLSA lookup for {subject} failed: {error}; DANE senders defer mail.",
    "{subject} の TLSA 問い合わせに失敗しました: {error}。DANE 対応の送信者は配送を保留します。",
    "Fix the nameservers so that TLSA queries (including 'no such record') are answered.",
    "TLSA の問い合わせ (レコードが無い場合も含む) に答えるようネームサーバーを修正してください。",
)
_spec(
    "DANE_NO_USABLE", S.WARNING, "dane",
    "{subject} has TLSA records, but none usable for SMTP (only usages 2 and 3 are).",
    "{subject} の TLSA レコードには SMTP で使えるもの (用途 2 と 3) がありません。",
    "Publish a DANE-EE (3 1 1) or DANE-TA (2 1 1) record.",
    "DANE-EE (3 1 1) または DANE-TA (2 1 1) のレコードを公開してください。",
)
_spec(
    "DANE_MISMATCH", S.CRITICAL, "dane",
    "The certificate of {subject} matches none of the TLSA records: DANE senders will not "
    "deliver.",
    "{subject} の証明書はどの TLSA レコードとも一致せず、DANE 対応の送信者は配送しません。",
    "Publish TLSA records for the current certificate key before changing certificates "
    "(publish new, wait two TTLs, switch, then remove old).",
    "証明書を替える前に新しい鍵の TLSA を公開してくださ"
    "い (新規公開、TTL の 2 倍待機、切替、旧削除)。",
)
_spec(
    "DANE_UNCHECKED", S.INFO, "dane",
    "The DANE-TA records of {subject} could not be checked (no certificate chain was "
    "recorded for it, as in results cached by an older version).",
    "{subject} の DANE-TA レコードは検証できませ"
    "んでした (証明書チェーンが記録されていません。旧バージョンのキャッシュ結果など)。",
)
_spec(
    "DANE_VALID", S.OK, "dane",
    "{subject} is protected by DANE: DNSSEC-validated TLSA records match its certificate.",
    "{subject} は DANE で保護されています: DNSSEC 検証済みの TLSA が証明書と一致します。",
)
# -- MTA-STS ------------------------------------------------------------------------------
_spec(
    "MTA_STS_ABSENT", S.INFO, "mta-sts",
    "{subject} publishes no MTA-STS policy.",
    "{subject} は MTA-STS ポリシーを公開していません。",
    "Publish _mta-sts TXT \"v=STSv1; id=...\" and a policy at "
    "https://mta-sts.{subject}/.well-known/mta-sts.txt (start with mode: testing).",
    "_mta-sts の TXT「v=STSv1; id=...」と https://mta-sts.{subject}/.well-known/mta-sts.txt の"
    "ポリシーを公開してください (まず mode: testing で)。",
)
_spec(
    "MTA_STS_RECORD_INVALID", S.ERROR, "mta-sts",
    "The _mta-sts record of {subject} is not valid: {error}; senders treat it as no policy.",
    "{subject} の _mta-sts レコードが不正です: {error}。送信側はポリシーなしとして扱います。",
    "Publish exactly one TXT record \"v=STSv1; id=<1-32 letters or digits>\".",
    "TXT レコード「v=STSv1; id=<英数字 1〜32 文字>」を 1 つだけ公開してください。",
)
_spec(
    "MTA_STS_POLICY_UNAVAILABLE", S.ERROR, "mta-sts",
    "The MTA-STS policy of {subject} could not be fetched: {error}.",
    "{subject} の MTA-STS ポリシーを取得できません: {error}。",
    "Serve the policy over HTTPS at mta-sts.{subject}, status 200, text/plain, without "
    "redirects.",
    "mta-sts.{subject} で HTTPS によりポリシーを"
    "配信してください (200、text/plain、リダイレクトなし)。",
)
_spec(
    "MTA_STS_POLICY_CERT_INVALID", S.ERROR, "mta-sts",
    "The policy host mta-sts.{subject} has a certificate that does not verify: {error}.",
    "ポリシーホスト mta-sts.{subject} の証明書を検証できません: {error}。",
    "Serve a publicly trusted certificate valid for mta-sts.{subject}.",
    "mta-sts.{subject} に有効な、公的に信頼された証明書を使ってください。",
)
_spec(
    "MTA_STS_POLICY_INVALID", S.ERROR, "mta-sts",
    "The MTA-STS policy of {subject} is not valid: {error}.",
    "{subject} の MTA-STS ポリシーが不正です: {error}。",
    "Follow RFC 8461 §3.2: version: STSv1 first, mode, one or more mx, max_age.",
    "RFC 8461 §3.2 に従ってください: 先頭に version: STSv1、mode、1 つ以上の mx、max_age。",
)
_spec(
    "MTA_STS_TESTING", S.INFO, "mta-sts",
    "The MTA-STS policy of {subject} is in testing mode: failures are reported, not "
    "prevented.",
    "{subject} の MTA-STS ポリシーは testing モードで、失敗は報告されるだけで防がれません。",
    "Move to mode: enforce once TLS-RPT reports show no failures.",
    "TLS-RPT レポートで失敗がなくなったら mode: enforce に移行してください。",
)
_spec(
    "MTA_STS_NONE", S.INFO, "mta-sts",
    "The MTA-STS policy of {subject} has mode none (policy withdrawn).",
    "{subject} の MTA-STS ポリシーは mode: none (撤回) です。",
)
_spec(
    "MTA_STS_MX_MISMATCH", S.ERROR, "mta-sts",
    "The MX host {host} of {subject} is not allowed by its MTA-STS policy ({patterns}).",
    "{subject} の MX ホスト {host} は MTA-STS ポリシー ({patterns}) で許可されていません。",
    "Add the host to the policy's mx lines (and change the id), or fix the MX records; in "
    "enforce mode senders skip it.",
    "ポリシーの mx 行にホストを追加 (id も変更) するか MX を"
    "修正してください。enforce では送信側はそのホストを使いません。",
)
_spec(
    "MTA_STS_CERT_INVALID", S.CRITICAL, "mta-sts",
    "The MTA-STS policy of {subject} is enforced, but the certificate of {host} does not "
    "verify: senders honouring the policy will not deliver there.",
    "{subject} の MTA-STS は enforce ですが {host}"
    " の証明書を検証できず、ポリシーに従う送信者は配送しません。",
    "Fix the certificate at once, or set mode: testing until it is fixed.",
    "直ちに証明書を修正するか、修正まで mode: testing にしてください。",
)
_spec(
    "MTA_STS_ENFORCED", S.OK, "mta-sts",
    "{subject} enforces MTA-STS and every MX host matches the policy.",
    "{subject} は MTA-STS を enforce しており、すべての MX ホストがポリシーに一致します。",
)
# -- TLS-RPT ------------------------------------------------------------------------------
_spec(
    "TLSRPT_ABSENT", S.INFO, "tls-rpt",
    "{subject} publishes no TLS-RPT record: senders cannot report TLS failures to it.",
    "{subject} は TLS-RPT レコードを公開しておらず、送信側は TLS の失敗を報告できません。",
    "Publish _smtp._tls TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@{subject}\".",
    "_smtp._tls の TXT「v=TLSRPTv1; rua=mailto:tlsrpt@{subject}」を公開してください。",
)
_spec(
    "TLSRPT_INVALID", S.WARNING, "tls-rpt",
    "The TLS-RPT record of {subject} is not valid: {error}.",
    "{subject} の TLS-RPT レコードが不正です: {error}。",
    "Publish exactly one record \"v=TLSRPTv1; rua=mailto:...\" (or https:).",
    "レコード「v=TLSRPTv1; rua=mailto:...」(または https:) を 1 つだけ公開してください。",
)
_spec(
    "TLSRPT_OK", S.OK, "tls-rpt",
    "{subject} receives TLS reports at {rua}.",
    "{subject} は TLS レポートを {rua} で受け取ります。",
)
# -- the sending side (T39 and the domain module's findings) -------------------------------
_spec(
    "SENDING_IP_UNKNOWN", S.INFO, "sending",
    "The sending address is not configured (delivery.source_address), so its reverse DNS "
    "cannot be checked.",
    "送信元アドレス (delivery.source_address) が未設定のため、逆引きを確認できません。",
    "Set delivery.source_address to the public address mail leaves from.",
    "delivery.source_address にメールを送信する公開アドレスを設定してください。",
)
_spec(
    "SENDING_PTR_MISSING", S.ERROR, "sending",
    "The sending address {subject} has no PTR record; many receivers refuse such mail.",
    "送信元アドレス {subject} に PTR がなく、多くの受信側が拒否します。",
    "Ask the address's owner for a PTR naming {helo}.",
    "アドレスの管理者に {helo} を指す PTR を依頼してください。",
)
_spec(
    "SENDING_PTR_NOT_CONFIRMED", S.ERROR, "sending",
    "The PTR of the sending address {subject} ({names}) does not resolve back to it.",
    "送信元アドレス {subject} の PTR ({names}) は元のアドレスに解決されません。",
    "Publish A/AAAA records for the PTR name that include {subject}.",
    "PTR 名の A/AAAA レコードに {subject} を含めてください。",
)
_spec(
    "SENDING_HELO_MISMATCH", S.WARNING, "sending",
    "The HELO name {helo} is not the PTR name of the sending address {subject} ({names}).",
    "HELO 名 {helo} は送信元アドレス {subject} の PTR 名 ({names}) と一致しません。",
    "Set delivery.helo_hostname to the forward-confirmed PTR name.",
    "delivery.helo_hostname を正引き確認済みの PTR 名に設定してください。",
)
_spec(
    "SENDING_HELO_NO_ADDRESS", S.WARNING, "sending",
    "The HELO name {helo} does not resolve to the sending address {subject}.",
    "HELO 名 {helo} は送信元アドレス {subject} に解決されません。",
    "Publish an A/AAAA record for {helo} pointing at {subject}.",
    "{helo} の A/AAAA レコードを {subject} に向けて公開してください。",
)
_spec(
    "SENDING_REVERSE_OK", S.OK, "sending",
    "The sending address {subject} has forward-confirmed reverse DNS {name}, matching the "
    "HELO name.",
    "送信元アドレス {subject} の逆引き {name} は正引きで確認され、HELO 名と一致します。",
)
_spec(
    "SENDING_DOMAIN", S.INFO, "sending",
    "{message}",
    "{message_ja}",
    "{remedy}",
    "{remedy_ja}",
)
_spec(
    "SENDING_SIDE_UNAVAILABLE", S.INFO, "sending",
    "The sending side of {subject} was not checked: {error}.",
    "{subject} の送信側は確認されませんでした: {error}。",
)

del S


def worst(findings: list[Finding]) -> Severity:
    """The most severe severity among findings (``ok`` for none)."""
    best = Severity.OK
    for finding in findings:
        if finding.effective_severity.rank > best.rank:
            best = finding.effective_severity
    return best
