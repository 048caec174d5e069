"""DMARC per RFC 9989 (DMARCbis): records, the DNS tree walk, alignment and the verdict (T34).

Talks to: DNS only, through the caller's lookup (``kakitome.auth.dnsio``): TXT at
``_dmarc.<name>`` during tree walks, and A/AAAA/MX of the author domain when an ``np=``
policy may apply. Trusts: DNS answers as published. Limits: a tree walk makes at most
``MAX_WALK_QUERIES`` (8) queries — a name of 8 or more labels is cut to 7 after the first
query (RFC 9989 §4.10).

The tree walk replaces RFC 7489's public suffix list:

- *Policy discovery*: the record at the author domain, else the first valid record found
  walking up the tree. A record is valid when it starts with ``v=DMARC1``; a name with
  several DMARC records has none.
- *Organisational domain*: walking up from a name, stop at a record with ``psd=n`` (that
  name is the organisational domain) or ``psd=y`` (the name one label below it is); if no
  record says either, the name with the fewest labels that has a record; if none has, the
  name itself.

Relaxed alignment means "same organisational domain", strict means "same name".

Record parsing is tolerant as RFC 9989 asks: unknown tags are ignored, so are RFC 7489's
``pct``, ``rf`` and ``ri`` (except ``pct=0``, which meant what ``t=y`` means now), and a
missing or invalid ``p=`` counts as ``p=none``. ``t=y`` (testing) lowers the disposition one
step: reject → quarantine → none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses

from kakitome.auth.dkim_canon import split_message
from kakitome.auth.dnsio import (
    AsyncLookup,
    DNSTemporaryError,
    Query,
    Step,
    SyncLookup,
    run_async,
    run_sync,
)

__all__ = [
    "MAX_WALK_QUERIES",
    "DMARCOutcome",
    "DMARCRecord",
    "TreeWalk",
    "author_domain",
    "check_dmarc",
    "check_dmarc_async",
    "dmarc_steps",
    "is_aligned",
    "organizational_domain_steps",
    "parse_dmarc_record",
    "tree_walk_steps",
    "walk_targets",
]

MAX_WALK_QUERIES = 8
# RFC 9989 §4.10: names of 8 or more labels jump to their last 7 labels after the first query.
_LONG_NAME_LABELS = 8
_POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True, slots=True)
class DMARCRecord:
    """A parsed DMARC policy record (RFC 9989 §4.7)."""

    policy: str = "none"
    subdomain_policy: str | None = None
    nonexistent_policy: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    psd: str = "u"
    testing: bool = False
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict, compare=False)


def parse_dmarc_record(text: str) -> DMARCRecord | None:
    """Parse a TXT value; ``None`` when it is not a DMARC record (first tag not
    ``v=DMARC1``). Unknown and obsolete tags are kept in ``tags`` but change nothing."""
    tags: dict[str, str] = {}
    for index, part in enumerate(text.split(";")):
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if index == 0:
            if name != "v" or value != "DMARC1":
                return None
            continue
        if not eq or not name or name in tags:
            continue
        tags[name] = value

    def choice(tag: str, allowed: Sequence[str]) -> str | None:
        value = tags.get(tag, "").lower()
        return value if value in allowed else None

    testing = choice("t", ("y", "n"))
    if testing is None and tags.get("pct", "").strip() == "0":
        testing = "y"
    return DMARCRecord(
        policy=choice("p", _POLICIES) or "none",
        subdomain_policy=choice("sp", _POLICIES),
        nonexistent_policy=choice("np", _POLICIES),
        adkim=choice("adkim", ("r", "s")) or "r",
        aspf=choice("aspf", ("r", "s")) or "r",
        psd=choice("psd", ("y", "n", "u")) or "u",
        testing=testing == "y",
        rua=tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip()),
        ruf=tuple(u.strip() for u in tags.get("ruf", "").split(",") if u.strip()),
        tags=tags,
    )


def walk_targets(domain: str) -> list[str]:
    """The names a tree walk from ``domain`` queries, in order (at most 8)."""
    labels = _normalise(domain).split(".")
    targets = [".".join(labels)]
    if len(labels) >= _LONG_NAME_LABELS:
        labels = labels[-(_LONG_NAME_LABELS - 1) :]
        targets.append(".".join(labels))
    while len(labels) > 1:
        labels = labels[1:]
        targets.append(".".join(labels))
    return targets[:MAX_WALK_QUERIES]


@dataclass(frozen=True, slots=True)
class TreeWalk:
    """What a tree walk from ``domain`` found."""

    domain: str
    found: tuple[tuple[str, DMARCRecord], ...]  # (name, record), most specific first

    @property
    def policy(self) -> tuple[str, DMARCRecord] | None:
        """The policy domain and record: the first found (RFC 9989 §4.10.1)."""
        return self.found[0] if self.found else None

    @property
    def organizational_domain(self) -> str:
        """RFC 9989 §4.10.2."""
        for name, record in self.found:
            if record.psd == "n":
                return name
            if record.psd == "y":
                if name == self.domain:
                    return name
                # The name one label below the PSD, on the way to self.domain.
                return ".".join(self.domain.split(".")[-(name.count(".") + 2) :])
        if self.found:
            return self.found[-1][0]
        return self.domain


def _dmarc_records(answer: Sequence[str]) -> DMARCRecord | None:
    records = [r for r in (parse_dmarc_record(text) for text in answer) if r is not None]
    return records[0] if len(records) == 1 else None


def tree_walk_steps(domain: str) -> Step[TreeWalk]:
    """Walk up from ``domain`` until a ``psd=`` record or the top; DNSTemporaryError
    propagates (the caller reports temperror)."""
    start = _normalise(domain)
    found: list[tuple[str, DMARCRecord]] = []
    for target in walk_targets(start):
        answer = yield Query(f"_dmarc.{target}", "TXT")
        record = _dmarc_records(answer)
        if record is None:
            continue
        found.append((target, record))
        if record.psd in ("y", "n"):
            break
    return TreeWalk(start, tuple(found))


def organizational_domain_steps(domain: str) -> Step[str]:
    """The organisational domain of ``domain`` by tree walk."""
    walk = yield from tree_walk_steps(domain)
    return walk.organizational_domain


def is_aligned(identifier: str, author: str, mode: str, org_of: dict[str, str]) -> bool:
    """Strict: same name. Relaxed: same organisational domain (``org_of`` must hold both)."""
    identifier, author = _normalise(identifier), _normalise(author)
    if identifier == author:
        return True
    if mode == "s":
        return False
    return org_of[identifier] == org_of[author]


@dataclass(frozen=True, slots=True)
class DMARCOutcome:
    """The DMARC verdict on one message.

    ``result`` is pass, fail, none (no policy) or temperror. ``policy`` is the policy the
    record asks for (p, sp or np as applies); ``disposition`` is what to do, after ``t=y``.
    """

    result: str
    author_domain: str
    policy: str = "none"
    disposition: str = "none"
    policy_domain: str | None = None
    organizational_domain: str | None = None
    dkim_aligned: tuple[str, ...] = ()
    spf_aligned: bool = False
    testing: bool = False
    reason: str = ""


def dmarc_steps(
    from_domain: str,
    *,
    dkim_domains: Iterable[str] = (),
    spf_domain: str | None = None,
    spf_pass: bool = False,
) -> Step[DMARCOutcome]:
    """The DMARC check as a ``dnsio`` step.

    ``dkim_domains``: the ``d=`` of each *passing* DKIM signature. ``spf_domain``: the
    domain SPF checked (MAIL FROM's, or HELO's for a null sender) and ``spf_pass``
    whether SPF passed for it.
    """
    author = _normalise(from_domain)
    try:
        walk = yield from tree_walk_steps(author)
        if walk.policy is None:
            return DMARCOutcome("none", author, reason=f"no DMARC record for {author}")
        policy_domain, record = walk.policy
        org_of: dict[str, str] = {author: walk.organizational_domain}
        passing_dkim = [_normalise(d) for d in dkim_domains]
        candidates = list(passing_dkim)
        if spf_pass and spf_domain:
            candidates.append(_normalise(spf_domain))
        for name in candidates:
            if name not in org_of and name != author:
                org_of[name] = yield from organizational_domain_steps(name)
        dkim_aligned = tuple(d for d in passing_dkim if is_aligned(d, author, record.adkim, org_of))
        spf_aligned = bool(
            spf_pass and spf_domain and is_aligned(spf_domain, author, record.aspf, org_of)
        )
        policy = record.policy
        if policy_domain != author:
            policy = record.subdomain_policy or record.policy
            if record.nonexistent_policy is not None:
                exists = yield from _domain_exists(author)
                if not exists:
                    policy = record.nonexistent_policy
    except DNSTemporaryError as exc:
        return DMARCOutcome("temperror", author, reason=f"DNS lookup failed: {exc}")

    passed = bool(dkim_aligned) or spf_aligned
    disposition = "none" if passed else _lowered(policy) if record.testing else policy
    if passed:
        reason = "aligned " + " and ".join(
            (["DKIM " + ", ".join(dkim_aligned)] if dkim_aligned else [])
            + ([f"SPF {spf_domain}"] if spf_aligned else [])
        )
    else:
        reason = "no aligned DKIM signature or SPF pass"
    return DMARCOutcome(
        "pass" if passed else "fail",
        author,
        policy=policy,
        disposition=disposition,
        policy_domain=policy_domain,
        organizational_domain=org_of[author],
        dkim_aligned=dkim_aligned,
        spf_aligned=spf_aligned,
        testing=record.testing,
        reason=reason,
    )


def check_dmarc(
    from_domain: str,
    lookup: SyncLookup,
    *,
    dkim_domains: Iterable[str] = (),
    spf_domain: str | None = None,
    spf_pass: bool = False,
) -> DMARCOutcome:
    """``dmarc_steps`` with a blocking lookup."""
    steps = dmarc_steps(
        from_domain, dkim_domains=dkim_domains, spf_domain=spf_domain, spf_pass=spf_pass
    )
    return run_sync(steps, lookup)


async def check_dmarc_async(
    from_domain: str,
    lookup: AsyncLookup,
    *,
    dkim_domains: Iterable[str] = (),
    spf_domain: str | None = None,
    spf_pass: bool = False,
) -> DMARCOutcome:
    """``dmarc_steps`` with a coroutine lookup."""
    steps = dmarc_steps(
        from_domain, dkim_domains=dkim_domains, spf_domain=spf_domain, spf_pass=spf_pass
    )
    return await run_async(steps, lookup)


def author_domain(message: bytes) -> str | None:
    """The RFC5322.From domain, or ``None`` unless there is exactly one From field with
    exactly one address (RFC 9989 §4.4.1 leaves several authors to local policy; we refuse
    to guess which one a reader would see)."""
    fields, _ = split_message(message)
    values = [f.raw.split(b":", 1)[1] for f in fields if f.name == b"from"]
    if len(values) != 1:
        return None
    text = values[0].decode("utf-8", "replace").replace("\r\n", "")
    addresses = [addr for _, addr in getaddresses([text]) if addr]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = addresses[0].rpartition("@")[2]
    return _normalise(domain) or None


def _domain_exists(domain: str) -> Step[bool]:
    """RFC 9989: a domain exists when it has an A, AAAA or MX record."""
    for rdtype in ("A", "AAAA", "MX"):
        answer = yield Query(domain, rdtype)
        if answer:
            return True
    return False


def _lowered(policy: str) -> str:
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")


def _normalise(domain: str) -> str:
    name = domain.strip().rstrip(".").lower()
    if not name.isascii():
        with contextlib.suppress(UnicodeError):
            name = name.encode("idna").decode("ascii")
    return name
