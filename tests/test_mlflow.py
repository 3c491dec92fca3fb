"""The proxy's spans exported over OTLP/HTTP to a real MLflow tracking server (from PyPI, SQLite
backend), read back with MLflow's own client: one trace per proxied call, with its model and
token usage, as the seed's MLflow tracing of the gateway shows them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests import upstream_stub as up
from tests.conftest import ROOT, CollectorProcess, free_port
from tests.readers import read_both
from tests.test_proxy import (
    KEYS,
    agent_ua,
    all_workers_started,
    claude,
    gateway_files,
    gemini,
    gpt,
)

MLFLOW_DIR = ROOT / "tests" / "mlflow"


def mlflow_python() -> Path:
    """Python in a venv with tests/mlflow/requirements.txt installed (made when missing or
    when the requirements changed): MLflow pins libraries the collector's venv need not share."""
    venv = MLFLOW_DIR / ".venv"
    wanted = (MLFLOW_DIR / "requirements.txt").read_text()
    installed = venv / "requirements.installed"
    if not installed.exists() or installed.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        done = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "-r", str(MLFLOW_DIR / "requirements.txt")],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"installing MLflow failed:\n{done.stdout}\n{done.stderr}")
        installed.write_text(wanted)
    return venv / "bin" / "python"


class MlflowServer:
    def __init__(self, directory: Path) -> None:
        self.python = mlflow_python()
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = directory / "mlflow.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.python), "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", self.url.rsplit(":", 1)[1], "--workers", "1",
             "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
             "--default-artifact-root", (directory / "artifacts").as_uri()],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=directory,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.2)

    def client(self, command: str, arg: str) -> str:
        done = subprocess.run(
            [str(self.python), str(MLFLOW_DIR / "traces.py"), self.url, command, arg],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def traces(self, experiment_id: str, count: int) -> list[dict[str, Any]]:
        """The experiment's traces, once there are ``count`` (the export is batched)."""
        deadline = time.monotonic() + 60
        while True:
            found = json.loads(self.client("traces", experiment_id))
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) == count, found
                return found
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()


CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
# The proxy tests' gateway, its spans also sent to MLflow's experiment.
TRACES_TOML = """
[traces]
export_url = "{mlflow}/v1/traces"
export_headers = {{ x-mlflow-experiment-id = "{experiment}" }}
"""


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


def test_spans_exported_to_mlflow_are_one_trace_per_call_with_model_and_usage(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    experiment = mlflow_server.client("experiment", "coding-agents")
    stub = up.Stub()
    stub.start()
    traces = TRACES_TOML.format(mlflow=mlflow_server.url, experiment=experiment)
    config, tokens, alice = gateway_files(tmp_path, stub, traces)
    proc = CollectorProcess(tmp_path / "warehouse", "--proxy-config", str(config),
                            "--tokens-file", str(tokens), "--workers", "2", env=KEYS)  # fmt: skip
    try:
        all_workers_started(proc)
        ua = agent_ua("claude-cli/2.1.197 (external, cli)")
        with claude(proc, alice, ua).messages.stream(
            model="databricks-claude-opus-4-6", max_tokens=256,
            messages=[{"role": "user", "content": "Say hello"}],
        ) as stream:  # fmt: skip
            list(stream.text_stream)
        with pytest.raises(anthropic.APIStatusError):
            claude(proc, alice, ua).messages.create(
                model="databricks-claude-overloaded", max_tokens=64,
                messages=[{"role": "user", "content": "hi"}],
            )  # fmt: skip
        gpt(proc, alice, agent_ua("codex_cli_rs/0.169.0")).responses.create(  # type: ignore[arg-type]
            model="databricks-gpt-5-2", input="What is the answer?"
        )
        client = gemini(proc, agent_ua("GeminiCLI/0.61.0"), bearer=alice)  # type: ignore[arg-type]
        client.models.generate_content(model="databricks-gemini-2-5-flash", contents="Salut")
        # A call of an agent's trace: MLflow never gets the agent's spans, so the call is a
        # trace of its own there, complete, linked to the agent's span.
        claude(proc, alice, ua).messages.create(
            model="databricks-claude-cheap", max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )  # fmt: skip

        found = mlflow_server.traces(experiment, 5)
        spans_table = proc.table_path("main.ai_gateway.agents_otel_spans")
        deadline = time.monotonic() + 20
        while len(stored := read_both(spans_table, key=lambda r: r["span_id"])) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.stop()
        stub.stop()

    by_model = {t["spans"][0]["attributes"]["gen_ai.request.model"]: t for t in found}
    assert sorted(by_model) == ["claude-haiku-4-5", "claude-opus-4-6", "claude-overloaded",
                                "gemini-2.5-flash", "gpt-5.2"]  # fmt: skip
    summary = {
        model: (t["state"], t["token_usage"], [(s["name"], s["span_type"]) for s in t["spans"]])
        for model, t in by_model.items()
    }
    assert summary == {
        "claude-opus-4-6": (
            "OK",
            {"input_tokens": 132, "output_tokens": 15, "total_tokens": 147,
             "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7},
            [("chat claude-opus-4-6", "CHAT_MODEL")],
        ),
        "claude-haiku-4-5": (
            "OK",
            {"input_tokens": 132, "output_tokens": 15, "total_tokens": 147,
             "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7},
            [("chat claude-haiku-4-5", "CHAT_MODEL")],
        ),
        "claude-overloaded": ("ERROR", None, [("chat claude-overloaded", "CHAT_MODEL")]),
        "gpt-5.2": (
            "OK",
            {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42,
             "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0},
            [("chat gpt-5.2", "CHAT_MODEL")],
        ),
        "gemini-2.5-flash": (
            "OK",
            {"input_tokens": 11, "output_tokens": 15, "total_tokens": 26,
             "cache_read_input_tokens": 3, "cache_creation_input_tokens": 0},
            [("generate_content gemini-2.5-flash", "LLM")],  # MLflow's type for the operation
        ),
    }  # fmt: skip
    # The same spans as the Delta table's: ids, and every attribute (MLflow adds its own).
    for trace in found:
        (span,) = trace["spans"]
        (row,) = [r for r in stored if r["span_id"] == span["span_id"]]
        if row["parent_span_id"] is None:
            assert (span["trace_id"], span["parent_span_id"]) == (row["trace_id"], None)
        else:  # the agent's call: its own trace at MLflow, the caller's in the table
            assert (row["trace_id"], row["parent_span_id"]) == (CALLER_TRACE, CALLER_SPAN)
            assert (span["trace_id"], span["parent_span_id"]) == (row["span_id"] * 2, None)
        ours = {k: v for k, v in span["attributes"].items() if not k.startswith("mlflow.")}
        assert sorted(ours) == sorted(row["attributes"])
        for name, value in ours.items():  # MLflow gives values their JSON types; Delta strings
            stored_value = row["attributes"][name]
            assert value == (stored_value if isinstance(value, str) else json.loads(stored_value))
        assert trace["tags"] == {"service.name": "otlp-delta-collector", "service.version": "0.1.0"}
    assert by_model["claude-opus-4-6"]["spans"][0]["attributes"]["gateway.token"] == "alice"
    assert by_model["claude-overloaded"]["spans"][0]["attributes"]["error.type"] == (
        "overloaded_error"
    )
