"""`tokenprune serve toy-vlm` as the README runs it: the bundled reference model, exported for vLLM,
behind vLLM's OpenAI-compatible server, with VisionZip at 16 of 64 image tokens. Chat requests with images
over HTTP: the prompt is pruned by exactly 48 tokens against the unpruned prompt (counted by the
transformers processor), and the answers are the transformers adapter's. Then 50 requests at
concurrency 8. The server runs as its own process (with its engine in a spawned one, as vLLM
starts it), listens on 127.0.0.1 on a free port and is always stopped."""

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
from pathlib import Path

import pytest
import torch

import tokenprune as tp
from tokenprune import zoo
from tokenprune.zoo import scenes

STARTUP_SECONDS = 900
BUDGET = 16
NATURAL = 64  # 96 px images in 12 px patches
SAMPLES = [scenes.sample(7, i) for i in range(5)]  # one of each question type
TOKENPRUNE = [str(Path(sys.executable).with_name("tokenprune"))]


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


def server_environment() -> dict:
    """The test process runs engines in-process (conftest); the server starts its engine process the
    way it does for users."""
    return {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    command = TOKENPRUNE + [
        "serve", "toy-vlm", "--method", "visionzip", "--budget", str(BUDGET),
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "256", "--max-num-seqs", "8",
        "--kv-cache-memory-bytes", "64M", "--limit-mm-per-prompt", json.dumps({"image": 1}),
    ]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=server_environment()
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"tokenprune serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"tokenprune serve not ready after {STARTUP_SECONDS}s:\n{log.read_text()[-4000:]}"
                )
            time.sleep(2)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def picture(sample):
    return scenes.to_pil(scenes.render([sample.scene])[0])


def chat_body(sample) -> dict:
    buffer = io.BytesIO()
    picture(sample).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return {
        "model": "toy-vlm",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": sample.question},
                ],
            }
        ],
        "max_tokens": 3,
        "temperature": 0.0,
    }


def test_chat_prompts_are_pruned_and_answers_match_transformers(server):
    model, processor = zoo.load_vlm()
    for sample in SAMPLES:
        reply = post(f"{server}/v1/chat/completions", chat_body(sample))
        inputs = processor(text=[f"<image> {sample.question}"], images=[picture(sample)], return_tensors="pt")
        unpruned = inputs.input_ids.shape[1]
        assert reply["usage"]["prompt_tokens"] == unpruned - NATURAL + BUDGET
        # the served prompt is shorter, so kept tokens and the text after them take contiguous positions
        with tp.apply(model, tp.VisionZip(BUDGET, contextual=0, positions="reindex")), torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        expected = processor.tokenizer.decode(generated[0, unpruned:], skip_special_tokens=True)
        assert reply["choices"][0]["message"]["content"].strip() == expected.strip()


def test_fifty_requests_at_concurrency_eight(server):
    samples = [scenes.sample(8, i) for i in range(50)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda s: post(f"{server}/v1/chat/completions", chat_body(s), 300), samples))
    tokenizer = zoo.load_vlm()[1].tokenizer
    for sample, reply in zip(samples, replies):
        assert reply["choices"][0]["finish_reason"] in ("length", "stop")
        text = len(tokenizer(f"<image> {sample.question}").input_ids) - 1  # <s> and the question
        assert reply["usage"]["prompt_tokens"] == text + BUDGET


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "visionzip", "--budget", "0"], "tokenprune: 'budget' must be a positive"),
        (["--method", "visionzip", "--budget", "-4"], "tokenprune: 'budget' must be a positive"),
        (["--method", "tome", "--budget", "16"], "tokenprune: unknown 'method' 'tome'"),
        (["--method", "random", "--budget", "16", "--options", '{"colour": 1}'], "tokenprune: bad 'options'"),
    ],
)
def test_bad_flags_fail_before_vllm_starts(flags, message):
    done = subprocess.run(
        TOKENPRUNE + ["serve", "toy-vlm", *flags, "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(message)
