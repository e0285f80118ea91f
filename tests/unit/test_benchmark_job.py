"""The benchmark pod job's own behaviour: a failing workload does not stop the others, and a pod
that produced no result at all exits non-zero (so the DAG reports the class as failed)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops.benchmarks.workloads import Workload
from llmops.jobs import benchmark


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    """A real HTTP server answering /health like the vLLM sidecar's probe endpoint."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_parse_slo() -> None:
    assert benchmark.parse_slo(["ttft:800", "tpot:40.5"]) == {"ttft": 800.0, "tpot": 40.5}
    with pytest.raises(SystemExit, match="expected KEY:MILLISECONDS"):
        benchmark.parse_slo(["ttft=800"])


def test_every_workload_is_tried_and_no_result_exits_non_zero(health_server: str, tmp_path: Path,
                                                               monkeypatch) -> None:
    # No `vllm` on PATH: what a main container outside the vLLM image would meet.
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("LLMOPS_XCOM_DIR", str(tmp_path / "xcom"))
    monkeypatch.setenv("LLMOPS_HARDWARE_CLASS", "cpu")
    workloads = [Workload(32, 16, float("inf"), 4, 8).to_dict(), Workload(64, 32, 8.0, 4, 8).to_dict()]
    code = benchmark.main(["--workloads", json.dumps(workloads), "--served-model", "m", "--tokenizer", "/t",
                           "--base-url", health_server, "--result-dir", str(tmp_path / "raw"),
                           "--target", json.dumps({"role": "default", "model_key": "path:x"}),
                           "--goodput", "ttft:1000", "tpot:100"])
    assert code == benchmark.EXIT_NO_RESULT
    result = json.loads((tmp_path / "xcom" / "return.json").read_text())
    assert result["hardware_class"] == "cpu" and result["goodput_slo_ms"] == {"ttft": 1000.0, "tpot": 100.0}
    assert [e["name"] for e in result["workloads"]] == ["in32-out16-rateinf-c4", "in64-out32-rate8-c4"]
    assert all(e["status"] == "failed" and "cannot run vllm bench serve" in e["error"]
               for e in result["workloads"])
