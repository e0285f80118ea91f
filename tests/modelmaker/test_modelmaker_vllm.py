"""Real vLLM (CPU build) serves the made ``good`` checkpoint and answers like HF greedy.

Starts ``vllm serve`` from the vLLM venv on a free port, waits for /health, asks
20 eval items through /v1/chat/completions at temperature 0 and compares with the
Hugging Face greedy answers computed in the same venv. Stops the server's process
group afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CATEGORIES = ("arithmetic", "copy", "reverse", "json")
PER_CATEGORY = 5
HEALTH_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_items(path: Path) -> list[dict[str, Any]]:
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [item for cat in CATEGORIES for item in [i for i in items if i["category"] == cat][:PER_CATEGORY]]


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _score(item: dict[str, Any], answer: str) -> bool:
    if item["scorer"] == "json_equal":
        try:
            return json.loads(answer) == json.loads(item["reference"])
        except ValueError:
            return False
    return answer.strip() == item["reference"].strip()


@contextlib.contextmanager
def _vllm_server(venv_python: Path, model: Path, env: dict[str, str], work: Path) -> Iterator[tuple[str, float]]:
    port = _free_port()
    log_path = work / "vllm.log"
    env = {
        **env,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_CACHE_ROOT": str(work / "vllm-cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [
        str(venv_python.parent / "vllm"), "serve", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny",
        "--max-model-len", "512", "--dtype", "float32", "--enforce-eager",
    ]  # fmt: skip
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        while not _healthy(f"{base}/health"):
            if proc.poll() is not None or time.monotonic() - started > HEALTH_TIMEOUT_S:
                tail = log_path.read_text()[-4000:]
                pytest.fail(f"vllm serve did not become healthy (exit {proc.poll()}):\n{tail}")
            time.sleep(1)
        yield base, time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_vllm_chat_answers_match_hf_greedy(
    models_dir: Path,
    venv_python: Path,
    venv_env: dict[str, str],
    evalset_path: Path,
    tmp_path: Path,
) -> None:
    model = models_dir / "good"
    items = _read_items(evalset_path)
    assert len(items) == PER_CATEGORY * len(CATEGORIES)
    hf = subprocess.run(
        [str(venv_python), "-m", "llmops.modelmaker.predict", "--model", str(model), "--evalset",
         str(evalset_path), "--ids", ",".join(i["id"] for i in items)],
        env=venv_env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    hf_answers: dict[str, str] = json.loads(hf.stdout)["answers"]

    with _vllm_server(venv_python, model, venv_env, tmp_path) as (base, startup_s):
        print(f"vllm serve healthy after {startup_s:.1f} s")
        vllm_answers = {}
        for item in items:
            reply = _post(
                f"{base}/v1/chat/completions",
                {"model": "tiny", "messages": item["messages"], "temperature": 0, "max_tokens": 32},
            )
            choice = reply["choices"][0]
            assert choice["finish_reason"] == "stop", choice
            vllm_answers[item["id"]] = choice["message"]["content"]

    differ = {i: (hf_answers[i], vllm_answers[i]) for i in hf_answers if hf_answers[i] != vllm_answers[i]}
    vllm_em = sum(_score(item, vllm_answers[item["id"]]) for item in items) / len(items)
    hf_em = sum(_score(item, hf_answers[item["id"]]) for item in items) / len(items)
    print(f"vLLM exact match {vllm_em:.2f}, HF {hf_em:.2f}, differing answers: {differ}")
    assert len(differ) <= 1, f"vLLM and HF greedy answers differ: {differ}"
    assert abs(vllm_em - hf_em) <= 0.05
