"""Secrets that must never be shown: storage credentials, from options and the environment.

Nothing logs them on purpose; an object store's error message may still quote one (a SAS
token in a URL, say), so every log line and every error shown by /readyz passes through here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

__all__ = ["error_text", "redact_secrets", "register_secrets"]

# Keys whose values must never be shown, in storage options and in the environment.
_SECRET_KEY = re.compile(r"SECRET|KEY|TOKEN|PASSWORD|SAS|SIGNATURE|CREDENTIAL|CONNECTION", re.I)
_ENV_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_")
_registered: set[str] = set()
# delta-rs colours the causes of its errors for a terminal.
_TERMINAL_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def register_secrets(options: Mapping[str, str]) -> None:
    """Take note of the secret values among storage options (``--storage-option``)."""
    _registered.update(v for k, v in options.items() if _SECRET_KEY.search(k))


def redact_secrets(text: str) -> str:
    """``text`` without any secret value of the storage options or the storage variables."""
    secrets = set(_registered)
    secrets.update(
        v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES) and _SECRET_KEY.search(k)
    )
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def error_text(error: BaseException | str, first_line: bool = False) -> str:
    """An error as shown in /readyz, an answer or a log line: no secret, no terminal colours;
    with ``first_line``, its first line only (a Rust error's chain of causes follows it)."""
    text = str(error) or (type(error).__name__ if isinstance(error, BaseException) else "")
    if first_line:
        text = text.splitlines()[0]
    return redact_secrets(_TERMINAL_ESCAPE.sub("", text))
