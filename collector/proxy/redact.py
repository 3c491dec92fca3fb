"""Credentials kept out of the inference table: agents send files, shell output and
environments in their prompts, and models repeat them. Each credential found in a payload is
replaced by ``[REDACTED:kind]`` before the payload is stored; the row counts how many."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

__all__ = ["DEFAULT_PATTERNS", "Redactor"]

# kind → pattern. Ordered: a private key block before the tokens that may sit inside one.
DEFAULT_PATTERNS: dict[str, str] = {
    "private_key": r"-----BEGIN[ A-Z0-9]*PRIVATE KEY-----.*?-----END[ A-Z0-9]*PRIVATE KEY-----",
    "anthropic_key": r"\bsk-ant-[A-Za-z0-9_-]{20,}",
    "openai_key": r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
    "google_api_key": r"\bAIza[0-9A-Za-z_-]{35}",
    "aws_access_key_id": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "aws_secret_access_key": (
        r"(?<![A-Za-z0-9])(?i:aws_?secret_?access_?key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}"
    ),
    "azure_storage_key": r"(?i:AccountKey)=[A-Za-z0-9+/]{40,}={0,2}",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    "slack_token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    "stripe_key": r"\b[rs]k_live_[A-Za-z0-9]{20,}",
    "collector_token": r"\bodc_[A-Za-z0-9_-]{20,}",
    "jwt": r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    "bearer_token": r"\b(?i:bearer)\s+[A-Za-z0-9._~+/-]{20,}=*",
}


class Redactor:
    """The default patterns and ``extra`` ones (kind → regular expression; a kind of the
    defaults is replaced; flags scoped, as ``(?i:…)``). Raises ``re.error`` for a pattern
    that does not compile."""

    def __init__(self, extra: Mapping[str, str] | None = None) -> None:
        patterns = {**DEFAULT_PATTERNS, **(extra or {})}
        self.kinds = list(patterns)
        # One alternation, one pass over the text: each group is one kind.
        self._pattern = re.compile(
            "|".join(f"(?P<k{i}>{p})" for i, p in enumerate(patterns.values())), re.DOTALL
        )

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """``text`` with each credential replaced, and how many of each kind were."""
        found: Counter[str] = Counter()

        def replace(match: re.Match[str]) -> str:
            groups = match.groupdict()
            kind = next(k for i, k in enumerate(self.kinds) if groups[f"k{i}"] is not None)
            found[kind] += 1
            return f"[REDACTED:{kind}]"

        return self._pattern.sub(replace, text), found
