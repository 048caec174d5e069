"""What ``domain verify`` says, per finding code, in English and Japanese.

One entry per code: ``(message, remedy)`` in each language, as ``str.format`` templates
over the fields the check passes (``name``, ``ip``, ``wanted`` ...). The CLI, the API and
the web page print the same texts. A code whose status is ok has no remedy.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TEXTS", "Texts"]


class Texts(NamedTuple):
    en: str
    ja: str
    remedy_en: str = ""
    remedy_ja: str = ""


TEXTS: dict[str, Texts] = {
    # DKIM
    "dkim_ok": Texts(
        "The DKIM record for the {label} carries our public key.",
        "{label} の DKIM レコードは正しい公開鍵です。",
    ),
    "dkim_missing": Texts(
        "No DKIM record for the {label}.",
        "{label} の DKIM レコードがありません。",
        "Publish the TXT record {name} that `kakitome domain dns {domain}` prints.",
        "`kakitome domain dns {domain}` が示す TXT レコード {name} を公開してください。",
    ),
    "dkim_mismatch": Texts(
        "The DKIM record for the {label} does not match our key: receivers will fail "
        "every signature made with it.",
        "{label} の DKIM レコードが当サービスの鍵と一致しません。"
        "この鍵による署名はすべて検証に失敗します。",
        "Replace the record's value with the one `kakitome domain dns` prints (copy it "
        "whole; a cut or an extra character breaks it).",
        "`kakitome domain dns` が示す値でレコードを置き換えてください"
        "（途中で切れたり余分な文字があると無効になります）。",
    ),
    # SPF (From domain and return path share the texts)
    "spf_ok": Texts(
        "The SPF record of {name} authorises our sending.",
        "{name} の SPF レコードは当サービスの送信を許可しています。",
    ),
    "spf_missing": Texts(
        "{name} has no SPF record.",
        "{name} に SPF レコードがありません。",
        "Publish a TXT record at {name}: {expected}",
        "{name} に TXT レコードを公開してください：{expected}",
    ),
    "spf_multiple": Texts(
        "{name} has {count} SPF records; receivers treat that as an error (permerror) and "
        "SPF fails for all mail.",
        "{name} に SPF レコードが {count} 件あります。受信側はエラー（permerror）とみなし、"
        "すべてのメールで SPF が失敗します。",
        "Merge them into one record that also contains '{wanted}'.",
        "「{wanted}」を含む一つのレコードにまとめてください。",
    ),
    "spf_too_many_lookups": Texts(
        "The SPF record of {name} needs more than 10 DNS lookups (include, a, mx, ptr, "
        "exists, redirect): receivers stop and report permerror, so SPF fails.",
        "{name} の SPF レコードは DNS 参照が 10 回を超えます（include, a, mx, ptr, exists, "
        "redirect）。受信側は permerror とし、SPF は失敗します。",
        "Remove includes of services you no longer use, replace a and mx by ip4/ip6 "
        "ranges, or flatten nested includes into addresses.",
        "使っていないサービスの include を削除し、a や mx を ip4/ip6 に置き換えるか、"
        "入れ子の include をアドレスに展開してください。",
    ),
    "spf_invalid": Texts(
        "The SPF record of {name} is invalid: {reason}.",
        "{name} の SPF レコードが不正です：{reason}。",
        "Replace it with: {expected} (plus what else sends for {name}).",
        "次の内容に置き換えてください：{expected}（{name} から送信する他のサービスも含めて）。",
    ),
    "spf_not_covering_ip": Texts(
        "The SPF record of {name} does not authorise our sending: {uncovered}. Receivers "
        "see SPF fail or softfail.",
        "{name} の SPF レコードは当サービスの送信を許可していません：{uncovered}。"
        "受信側では SPF が fail または softfail になります。",
        "Add '{wanted}' to the record, before its 'all'.",
        "レコードの「all」の前に「{wanted}」を追加してください。",
    ),
    # return path
    "return_path_mx_ok": Texts(
        "Bounces to {name} reach {host}.",
        "{name} 宛てのバウンスは {host} に届きます。",
    ),
    "return_path_mx_missing": Texts(
        "The return path {name} has no MX record: bounces cannot come back, and some "
        "receivers refuse mail whose envelope domain cannot receive.",
        "リターンパス {name} に MX レコードがありません。バウンスが戻らず、"
        "受信できないエンベロープドメインのメールを拒否する受信側もあります。",
        "Publish: {name}. IN MX 10 {host}.",
        "次を公開してください：{name}. IN MX 10 {host}.",
    ),
    "return_path_mx_wrong": Texts(
        "The MX of the return path {name} points elsewhere ({found}), so bounces do not reach us.",
        "リターンパス {name} の MX が別のホスト（{found}）を指しているため、"
        "バウンスが当サービスに届きません。",
        "Make it: {name}. IN MX 10 {host}.",
        "次のように変更してください：{name}. IN MX 10 {host}.",
    ),
    "return_path_aligned": Texts(
        "The return path {name} is aligned with {domain} ({mode}).",
        "リターンパス {name} は {domain} とアラインしています（{mode}）。",
    ),
    "return_path_not_aligned": Texts(
        "The return path {name} is not aligned with {domain} ({why}), so SPF cannot make "
        "DMARC pass; only DKIM can.",
        "リターンパス {name} は {domain} とアラインしていません（{why}）。"
        "SPF では DMARC を通過できず、DKIM だけが頼りになります。",
        "Use relaxed SPF alignment: remove aspf=s from the DMARC record (or set aspf=r).",
        "SPF アラインメントを緩和モードにしてください："
        "DMARC レコードから aspf=s を削除する（または aspf=r にする）。",
    ),
    # DMARC
    "dmarc_ok": Texts(
        "DMARC is published{where} with p={policy}.{advice_en}",
        "DMARC は p={policy} で公開されています{where}。{advice_ja}",
    ),
    "dmarc_missing": Texts(
        "{domain} has no DMARC record. Gmail and Yahoo require one of bulk senders, and "
        "without it nobody reports abuse of your domain to you.",
        "{domain} に DMARC レコードがありません。Gmail と Yahoo は大量送信者に必須としており、"
        "なりすましの報告も届きません。",
        'Publish: {name}. IN TXT "{expected}"; move to p=quarantine, then p=reject, once '
        "the reports show only your mail.",
        '次を公開してください：{name}. IN TXT "{expected}"。'
        "レポートで自分のメールだけと確認できたら p=quarantine、p=reject へ。",
    ),
    "dmarc_multiple": Texts(
        "{name} has {count} DMARC records; receivers then ignore them all.",
        "{name} に DMARC レコードが {count} 件あり、受信側はすべて無視します。",
        "Keep exactly one DMARC record.",
        "DMARC レコードを一つだけにしてください。",
    ),
    "dmarc_reports_not_to_us": Texts(
        "The DMARC record does not send aggregate reports to {rua}, so Kakitome cannot "
        "show you who sends as your domain.",
        "DMARC レコードの集計レポート送付先に {rua} が含まれていないため、"
        "誰があなたのドメインで送信しているかを表示できません。",
        "Add mailto:{rua} to rua= (several addresses are separated by commas).",
        "rua= に mailto:{rua} を追加してください（複数はカンマ区切り）。",
    ),
    "dmarc_aligned": Texts(
        "Mail as we send it passes DMARC ({reason}).",
        "当サービスが送るメールは DMARC を通過します（{reason}）。",
    ),
    "dmarc_not_aligned": Texts(
        "Mail as we send it would fail DMARC: neither a DKIM signature of {domain} nor SPF "
        "for {rp} passes and aligns. Receivers apply p={policy}.",
        "当サービスが送るメールは DMARC に失敗します。{domain} の DKIM 署名も {rp} の SPF も、"
        "通過かつアラインしていません。受信側は p={policy} を適用します。",
        "Fix the DKIM records first (they align by themselves), then the return-path SPF "
        "record; see the findings above.",
        "まず DKIM レコードを直し（それだけでアラインします）、"
        "次にリターンパスの SPF レコードを直してください。上の指摘を参照してください。",
    ),
    # PTR
    "ptr_unchecked": Texts(
        "No sending IPs are configured, so PTR records were not checked.",
        "送信 IP が未設定のため、PTR レコードは確認していません。",
        "Set domains.sending_ips to the addresses mail leaves from.",
        "domains.sending_ips に送信元アドレスを設定してください。",
    ),
    "ptr_ok": Texts(
        "{ip} has a forward-confirmed PTR ({found}).",
        "{ip} の PTR は正引きと一致しています（{found}）。",
    ),
    "ptr_missing": Texts(
        "The sending IP {ip} has no PTR record. Gmail, Yahoo and many others refuse or "
        "junk mail from addresses without reverse DNS.",
        "送信 IP {ip} に PTR レコードがありません。Gmail や Yahoo などは逆引きできない"
        "アドレスからのメールを拒否、または迷惑メールにします。",
        "Ask whoever runs {ip} (your host) to set its PTR to {helo}, and make {helo} "
        "resolve to {ip}.",
        "{ip} の管理者（ホスティング事業者）に PTR を {helo} に設定するよう依頼し、"
        "{helo} が {ip} を指すようにしてください。",
    ),
    "ptr_not_confirmed": Texts(
        "The PTR of {ip} names {found}, but that name does not resolve back to {ip} (not "
        "forward-confirmed); receivers treat it as no PTR.",
        "{ip} の PTR は {found} ですが、その名前は {ip} に正引きされません"
        "（正引き・逆引き不一致）。受信側は PTR なしと同じに扱います。",
        "Add an A/AAAA record {first} -> {ip}, or change the PTR to a name that resolves "
        "to {ip} (best: {helo}).",
        "{first} -> {ip} の A/AAAA レコードを追加するか、"
        "{ip} に正引きされる名前（推奨：{helo}）に PTR を変更してください。",
    ),
    # Gmail / Yahoo
    "bulk_sender_ok": Texts(
        "Gmail's and Yahoo's DNS requirements for bulk senders are met (SPF, DKIM, DMARC, "
        "alignment, PTR; TLS is always offered). Keep spam complaints under 0.3% and add "
        "one-click unsubscribe to marketing mail.",
        "Gmail と Yahoo の大量送信者向け DNS 要件を満たしています（SPF、DKIM、DMARC、"
        "アライン、PTR。TLS は常に使用）。苦情率は 0.3% 未満に保ち、"
        "販促メールにはワンクリック登録解除を付けてください。",
    ),
    "bulk_sender_requirements_unmet": Texts(
        "Gmail's and Yahoo's requirements for bulk senders (5,000+ messages a day) are not "
        "met: {unmet_en}.",
        "Gmail と Yahoo の大量送信者（1 日 5,000 通以上）向け要件を満たしていません：{unmet_ja}。",
        "Fix the findings above. Also keep the spam rate in Google Postmaster Tools under "
        "0.3% and add one-click unsubscribe (RFC 8058) to marketing mail.",
        "上記の指摘を修正してください。また Google Postmaster Tools の迷惑メール率を "
        "0.3% 未満に保ち、販促メールにはワンクリック登録解除（RFC 8058）を付けてください。",
    ),
    # receiving side (optional)
    "receiving_ok": Texts(
        "{label} is published for mail you receive.",
        "受信メール向けの {label} が公開されています。",
    ),
    "receiving_missing": Texts(
        "No {label} record (optional: it protects mail sent to {domain}).",
        "{label} レコードがありません（任意：{domain} 宛てのメールを保護します）。",
        'Publish {name}. IN TXT "{expected}" (see `kakitome domain dns`).',
        '{name}. IN TXT "{expected}" を公開してください（`kakitome domain dns` を参照）。',
    ),
}
