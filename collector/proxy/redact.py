"""Credentials kept out of the inference table: agents send files, shell output and
environments in their prompts, and models repeat them. Each credential found in a payload is
replaced by ``[REDACTED:kind]`` before the payload is stored; the row counts how many.

Payloads are searched as stored: JSON text, where a line break inside a string is the two
characters ``\\n``. So a word's start is also the place right after such an escape (a key at
the start of a line of a pasted file), and whitespace may be written as one."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping

__all__ = ["DEFAULT_PATTERNS", "Redactor"]

# Put after a pattern's first character (so that each pattern starts with a literal, which
# the regular expression engine searches for fast): that character starts a word, also right
# after a JSON escape.
_START = r"(?:(?<![A-Za-z0-9_].)|(?<=\\[nrtbf].))"
_GAP = r"(?:\s|\\[nrt])"  # whitespace, as it is or as a JSON string escapes it
_QUOTE = r"(?:\\?[\"'])?"  # a quote, as it is or escaped in a JSON string
_ASSIGN = rf"{_QUOTE}{_GAP}*[:=]{_GAP}*{_QUOTE}"  # `name = "value"`, `"name": "value"`
_PEM = r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"

# kind → pattern; a group named `secret` marks the part replaced (the rest, such as a
# variable's name, stays readable). Ordered: a private key block before the tokens that may
# sit inside one.
DEFAULT_PATTERNS: dict[str, str] = {
    # A block cut short (pasted in part, or at a payload's cut) goes to where its text ends.
    "private_key": (
        rf"{_PEM}(?:.*?-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\:]*)"
    ),
    "anthropic_key": rf"s{_START}k-ant-[A-Za-z0-9_-]{{20,}}",
    "openai_key": rf"s{_START}k-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{{20,}}",
    "google_api_key": rf"A{_START}Iza[0-9A-Za-z_-]{{35}}",
    "google_oauth_token": rf"y{_START}a29\.[0-9A-Za-z_-]{{20,}}",
    "aws_access_key_id": rf"A{_START}(?:KIA|SIA)[0-9A-Z]{{16}}(?![A-Za-z0-9])",
    "aws_secret_access_key": (
        rf"[aA]{_START}(?i:ws_?secret_?access_?key){_ASSIGN}(?P<secret>(?:[A-Za-z0-9+]|\\?/){{40}})"
    ),
    "aws_session_token": (
        rf"[aA]{_START}(?i:ws_?session_?token){_ASSIGN}(?P<secret>(?:[A-Za-z0-9+=]|\\?/){{40,}})"
    ),
    "azure_storage_key": r"(?i:AccountKey)=(?P<secret>[A-Za-z0-9+/]{40,}={0,2})",
    "github_token": rf"g{_START}(?:h[pousr]_[A-Za-z0-9]{{36,}}|ithub_pat_[A-Za-z0-9_]{{22,}})",
    "slack_token": rf"x{_START}ox[abposr]-[A-Za-z0-9-]{{10,}}",
    "stripe_key": rf"[rs]{_START}k_live_[A-Za-z0-9]{{20,}}",
    "collector_token": rf"o{_START}dc_[A-Za-z0-9_-]{{20,}}",
    "jwt": rf"e{_START}yJ[A-Za-z0-9_-]{{10,}}\.eyJ[A-Za-z0-9_-]{{10,}}\.[A-Za-z0-9_-]{{10,}}",
    "bearer_token": rf"[bB]{_START}(?i:earer){_GAP}+(?P<secret>[A-Za-z0-9._~+/-]{{20,}}=*)",
    "basic_auth": (
        rf"[aA]{_START}(?i:uthorization){_ASSIGN}{_GAP}*(?i:basic){_GAP}+"
        r"(?P<secret>[A-Za-z0-9+/]{12,}={0,2})"
    ),
    # scheme://user:password@host: the password.
    "url_password": r"://[^\s:/@\"'\\]+:(?P<secret>[^\s:/@\"'\\]+)@",
}


class Redactor:
    """The default patterns and ``extra`` ones (kind → regular expression; a kind of the
    defaults is replaced; flags scoped, as ``(?i:…)``; a group named ``secret`` marks the part
    replaced). Raises ``ValueError`` naming the kind of a pattern that does not compile or
    that matches the empty string."""

    def __init__(self, extra: Mapping[str, str] | None = None) -> None:
        extra = dict(extra or {})
        defaults = {k: p for k, p in DEFAULT_PATTERNS.items() if k not in extra}
        # The user's first: their kinds name what they match. Each pattern is searched on its
        # own, since one that starts with a literal is searched for fast (an alternation of
        # them is not), and its groups and backreferences mean what they say.
        self._patterns = [(kind, _compile(kind, p)) for kind, p in (extra | defaults).items()]

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """``text`` with each credential replaced, and how many of each kind were."""
        found: Counter[str] = Counter()
        for kind, pattern in self._patterns:
            text = pattern.sub(lambda m, kind=kind: _replace(m, kind, found), text)
        return text, found

    def find(self, text: str) -> Iterator[tuple[str, int, int]]:
        """Each credential in ``text``: its kind, and where it starts and ends."""
        for kind, pattern in self._patterns:
            for match in pattern.finditer(text):
                yield (kind, *_secret_span(match))


def _compile(kind: str, pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise ValueError(f"patterns.{kind}: {e}") from None
    if compiled.search("") is not None:
        raise ValueError(f"patterns.{kind}: matches the empty string, so it would match anywhere")
    return compiled


def _secret_span(match: re.Match[str]) -> tuple[int, int]:
    """Where the part to replace is: the ``secret`` group if the pattern has one and it took
    part, else the whole match."""
    if "secret" in match.re.groupindex and match.group("secret") is not None:
        return match.span("secret")
    return match.span()


def _replace(match: re.Match[str], kind: str, found: Counter[str]) -> str:
    found[kind] += 1
    start, end = _secret_span(match)
    whole = match.group()
    offset = match.start()
    return f"{whole[: start - offset]}[REDACTED:{kind}]{whole[end - offset :]}"
