"""``python -m collector health``: is the collector on this host ready? For a container's
``HEALTHCHECK`` and a Kubernetes exec probe, with nothing beyond the installed package.

It asks ``/readyz`` of the OTLP/HTTP listener that the same settings as ``serve``'s name
(flags, ``COLLECTOR_*`` variables, ``--config``), on loopback when it listens on every address,
over TLS when ``--tls-cert`` is set (its own listener: the certificate names the public host,
so it is not verified).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

from collector.config import Config

__all__ = ["HEALTH_SETTINGS", "check_ready", "readiness_url"]

HEALTH_SETTINGS = ("http", "tls_cert", "tls_key")
_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def readiness_url(config: Config) -> str | None:
    """Where this host's collector answers ``/readyz``; None when its HTTP listener is off."""
    if config.http is None:
        return None
    host = _ANY.get(config.http.host, config.http.host)
    scheme = "https" if config.tls_cert is not None else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{config.http.port}/readyz"


def check_ready(url: str, timeout: float) -> tuple[bool, str]:
    """Whether ``url`` says ready, and a line saying what it said."""
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            body = json.loads(answer.read() or b"{}")
        return True, f"ready: {body.get('status', 'ok')}"
    except urllib.error.HTTPError as e:
        try:
            problems = json.loads(e.read() or b"{}").get("problems", [])
        except ValueError:
            problems = []
        return False, f"not ready ({e.code}): {'; '.join(problems) or e.reason}"
    except (OSError, ValueError) as e:
        return False, f"no answer from {url}: {e}"
