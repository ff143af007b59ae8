"""End to end: `tokenprune demo` serving on 127.0.0.1, driven by a real headless Chromium (Debian's
chromium package through Playwright). Screenshots go to test-artifacts/ (gitignored).

Nothing here is skipped: without chromium or playwright the tests fail and say how to install them
(`make test-browser` does both).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tokenprune import zoo
from tokenprune.demos.app import long_context, rag, sweep, vision
from tokenprune.zoo import models, scenes

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
STARTUP_SECONDS = 180
RUN_MS = 120_000  # a run on a busy 2-core machine
SPEEDUP = re.compile(r"^\d+\.\d\d \(\d+\.\d\d-\d+\.\d\d\)$")  # median (min-max)
MIN_TEXT_PX = 12  # the smallest text of a figure, in CSS pixels as shown


def chromium_executable() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "Chromium not found on PATH: install Debian's package (apt-get install chromium, or make test-browser)"
        )
    return found


class Server:
    """The running demo: its URL and what it has printed so far."""

    def __init__(self, url: str, lines: queue.Queue, printed: list[str]):
        self.url, self._lines, self._printed = url, lines, printed

    def output(self) -> str:
        while not self._lines.empty():
            self._printed.append(self._lines.get())
        return "".join(self._printed)


@pytest.fixture(scope="module")
def server():
    """The demo started as a user starts it, on a free port; yields it and stops it afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenprune.cli", "demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    output = []
    try:
        while True:
            try:
                line = lines.get(timeout=STARTUP_SECONDS)
            except queue.Empty:
                pytest.fail(f"the demo printed no URL within {STARTUP_SECONDS} s:\n{''.join(output)}")
            output.append(line)
            found = re.search(r"running at (http://127\.0\.0\.1:\d+)", line)
            if found:
                break
            if process.poll() is not None:
                pytest.fail(f"the demo exited with {process.returncode}:\n{''.join(output)}")
        assert found.group(1) == f"http://127.0.0.1:{port}"
        yield Server(found.group(1), lines, output)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (or make test-browser)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(server.url)
    yield page
    page.close()


def table_rows(page, selector: str) -> list[list[str]]:
    """Body cells of a Gradio dataframe (a grid of divs), row by row."""
    rows = page.locator(f"{selector} [role=row][data-index]")
    return [
        [c.strip() for c in rows.nth(i).locator("[role=gridcell]").all_inner_texts()]
        for i in range(rows.count())
    ]


def table_header(page, selector: str) -> list[str]:
    cells = page.locator(f"{selector} [role=columnheader]")
    return [cells.nth(i).get_attribute("title") for i in range(cells.count())]


def loaded_width(page, selector: str, index: int = 0) -> int:
    """Natural width of the index-th image matching selector, once the browser has decoded it."""
    script = """([selector, index]) => {
        const image = document.querySelectorAll(selector)[index];
        return image && image.complete && image.naturalWidth;
    }"""
    return page.wait_for_function(script, arg=[selector, index], timeout=30_000).json_value()


def number(text: str) -> float:
    return float(text.replace(",", ""))


def visible_toasts(page) -> int:
    return page.locator(".toast-body:visible").count()


def clipped_cells(page, selector: str) -> list[str]:
    """Texts of the cells of a table that are cut: content wider than the cell, or the cell reaching
    past the table's visible box (scrolled out of it) or the page's right edge."""
    script = """(selector) => {
        const table = document.querySelector(selector).getBoundingClientRect();
        const right = Math.min(table.right, document.documentElement.clientWidth) + 1;
        return [...document.querySelectorAll(selector + ' [role=gridcell]')]
            .filter((cell) => cell.scrollWidth > cell.clientWidth + 1 || cell.getBoundingClientRect().right > right)
            .map((cell) => cell.innerText);
    }"""
    return page.evaluate(script, selector)


def test_vision_tab_compares_pruners_and_draws_kept_patches(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Vision").click()
    assert table_header(page, "#vision-table") == list(vision.COLUMNS)  # headers before any run
    seed = page.locator("#vision-seed input")
    for shown in (1000, 1001):  # the seed typed is shown first, the next click moves on
        page.click("#vision-scene")
        question = vision.generated_scene(shown)[1]
        expect(page.locator("#vision-question textarea")).to_have_value(question, timeout=30_000)
        expect(seed).to_have_value(str(shown))
    expect(page.locator("#vision-image img")).to_have_count(1)
    page.click("#vision-run")
    expect(page.locator("#vision-status")).to_contain_text("Ran 3 configurations", timeout=RUN_MS)

    header = table_header(page, "#vision-table")
    assert header == list(vision.COLUMNS)
    rows = table_rows(page, "#vision-table")
    assert [row[0] for row in rows] == ["unpruned", "divprune @ 0.25", "fastv @ 0.25"]
    column = {name: i for i, name in enumerate(header)}
    for row in rows:
        assert number(row[column["prefill ms"]]) > 0 and number(row[column["total ms"]]) > 0
        assert number(row[column["tokens prefilled"]]) > 0
        assert SPEEDUP.match(row[column["prefill speedup (min-max)"]])
    note = page.inner_text("#vision-note")  # what total and prefill time each measure
    assert "prefill ms" in note and "total ms" in note and "smallest and largest ratio" in note
    patches = (scenes.IMAGE_SIZE // models.PATCH_SIZE) ** 2
    kept = f"{patches // 4} / {patches}"
    assert [row[column["image tokens kept"]] for row in rows] == ["all", kept, kept]

    overlays = page.locator("#vision-overlays img")
    expect(overlays).to_have_count(2, timeout=30_000)
    for i in range(2):  # the images really loaded, at the overlay's size
        assert loaded_width(page, "#vision-overlays img", i) == 288
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "demo-vision.png", full_page=True)


def test_rag_tab_shows_counts_blocks_and_answers(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="RAG / HTML").click()
    assert table_header(page, "#rag-counts") == list(rag.COUNT_COLUMNS)
    assert table_header(page, "#rag-answers") == list(rag.ANSWER_COLUMNS)
    page.locator("#rag-page input").click()
    page.get_by_role("option", name="harbour-bridge-news").click()
    expect(page.locator("#rag-question textarea")).to_have_value(
        "How much did the bridge restoration cost?", timeout=30_000
    )
    page.click("#rag-run")
    expect(page.locator("#rag-status")).to_contain_text("Kept", timeout=RUN_MS)

    counts = table_rows(page, "#rag-counts")
    assert [row[0] for row in counts] == ["raw HTML", "cleaned (markdown)", "pruned (budget 150)"]
    raw, cleaned, pruned = (number(row[1]) for row in counts)
    assert pruned <= 150 < cleaned < raw
    kept, total = map(int, re.search(r"Kept (\d+) of (\d+) blocks", page.inner_text("#rag-status")).groups())
    assert 0 < kept < total
    expect(page.locator("#rag-blocks")).to_contain_text("removed")
    answers = table_rows(page, "#rag-answers")
    assert [row[0] for row in answers] == ["whole cleaned page", "pruned context"]
    for row in answers:  # whole sentences, shown whole
        assert "3.8 million pounds" in row[1] and row[1].endswith("first estimate.")
    assert clipped_cells(page, "#rag-answers") == []
    expect(page.locator("#rag-pruned")).to_contain_text("Pruned context")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "demo-rag.png", full_page=True)


def test_long_context_and_sweep_tabs_render_measurements(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Long context").click()
    assert table_header(page, "#long-table") == list(long_context.COLUMNS)
    page.get_by_role("button", name="Generate retrieval task").click()
    expect(page.locator("#long-prompt textarea")).not_to_have_value("", timeout=30_000)
    page.click("#long-run")
    expect(page.locator("#long-status")).to_contain_text("Ran 3 configurations", timeout=RUN_MS)
    header = table_header(page, "#long-table")
    rows = table_rows(page, "#long-table")
    assert [row[0] for row in rows] == ["unpruned", "lazyskip @ 0.1", "gemfilter @ 0.1"]
    per_layer = [[int(n) for n in row[header.index("tokens per layer")].split(" · ")] for row in rows]
    depth = json.loads((zoo.path("toy-lm") / "config.json").read_text())["num_hidden_layers"]
    assert per_layer[0] == [1020] * depth and per_layer[1][0] == 1020 and per_layer[1][-1] < 200
    assert all(number(row[header.index("TTFT ms")]) > 0 for row in rows)
    assert all(SPEEDUP.match(row[header.index("TTFT speedup (min-max)")]) for row in rows)
    assert "smallest and largest ratio" in page.inner_text("#long-status")
    expect(page.locator("#long-plot img")).to_have_count(1, timeout=30_000)

    page.get_by_role("tab", name="Sweep").click()
    page.locator("#sweep-questions input").fill("5")
    page.click("#sweep-run")
    expect(page.locator("#sweep-status")).to_contain_text("Swept 6 (pruner, budget) pairs", timeout=RUN_MS)
    assert "slowest and fastest single question" in page.inner_text("#sweep-status")
    expect(page.locator("#sweep-plot img")).to_have_count(1)
    # legible at 1400 px: drawn at its size, shown at least 3/4 of it and inside the page, so that
    # its smallest text (FONT_PT at DPI) is at least MIN_TEXT_PX CSS pixels tall
    natural = loaded_width(page, "#sweep-plot img")
    assert natural == round(sweep.FIGURE_INCHES[0] * sweep.DPI)
    box = page.locator("#sweep-plot img").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1400
    assert sweep.FONT_PT * sweep.DPI / 72 * box["width"] / natural >= MIN_TEXT_PX
    expect(page.locator("#sweep-table")).to_contain_text("fastv")
    assert re.search(r"\d\.\d\dx \(\d+\.\d\d-\d+\.\d\d\)", page.inner_text("#sweep-table"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "demo-sweep.png", full_page=True)


def test_bad_input_is_a_message_in_the_page(page, server, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="RAG / HTML").click()
    page.click("#rag-run")
    expect(page.locator("#rag-status")).to_contain_text("Error: Paste an HTML page", timeout=RUN_MS)
    page.locator("#rag-page input").click()
    page.get_by_role("option", name="harbour-bridge-news").click()
    expect(page.locator("#rag-question textarea")).not_to_have_value("", timeout=30_000)
    page.locator("#rag-budget input").fill("0")
    page.click("#rag-run")  # out of range is said, not clamped
    expect(page.locator("#rag-status")).to_contain_text("The budget is a number of tokens >= 1, got 0.")
    expect(page.locator("#rag-budget input")).to_have_value("0")
    assert table_header(page, "#rag-answers") == list(rag.ANSWER_COLUMNS)  # headers, no rows
    page.locator("#rag-budget input").fill("150")

    page.get_by_role("tab", name="Vision").click()
    page.click("#vision-run")  # no image, no question
    expect(page.locator("#vision-status")).to_contain_text("Error: Upload an image", timeout=RUN_MS)
    assert table_header(page, "#vision-table") == list(vision.COLUMNS)
    expect(page.locator(".toast-body")).to_have_count(1, timeout=5_000)  # this error's warning only
    page.get_by_role("tab", name="RAG / HTML").click()
    page.click("#rag-run")  # a new run closes the warning of the last one, from whichever tab
    expect(page.locator(".toast-body")).to_have_count(0, timeout=3_000)
    expect(page.locator("#rag-status")).to_contain_text("Kept", timeout=RUN_MS)

    page.get_by_role("tab", name="Vision").click()
    page.click("#vision-scene")
    expect(page.locator("#vision-question textarea")).not_to_have_value("", timeout=30_000)
    page.locator("#vision-budget input").fill("0")
    page.click("#vision-run")
    expect(page.locator("#vision-status")).to_contain_text("in (0, 1]; got 0.", timeout=RUN_MS)
    expect(page.locator("#vision-budget input")).to_have_value("0")
    not_an_image = tmp_path / "holiday.png"
    not_an_image.write_text("this is text")
    page.locator("#vision-image input[type=file]").set_input_files(not_an_image)
    page.locator("#vision-budget input").fill("0.25")
    page.click("#vision-run")
    expect(page.locator("#vision-status")).to_contain_text(
        "Error: The uploaded file 'holiday.png' is not an image", timeout=RUN_MS
    )
    page.get_by_text("Models").click()
    page.locator("#load-checkpoint textarea").fill("/nonexistent/checkpoint")
    page.click("#load-run")
    expect(page.locator("#load-status")).to_contain_text("Error: Could not load '/nonexistent/checkpoint'")
    expect(page.locator("#models")).to_contain_text("toy-vlm")  # the app goes on with what it had
    assert "Traceback" not in page.inner_text("body")
    # every error above was the user's: one line each on the server's console, no traceback
    printed = server.output()
    assert "Traceback" not in printed
    assert printed.count("bad input:") == 5 and printed.count("model load failed: Could not load") == 1
