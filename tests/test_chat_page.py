"""The chat page at GET /, driven in headless Chromium (Playwright) against the shared server."""

from __future__ import annotations

from pathlib import Path

import pytest

from groklm.infer.engine import Engine, SamplingParams
from groklm.tokenizer.chat import render_prompt

from helpers.servers import KEY, shared_server, wait_idle

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ANSWER = '.message[data-role="assistant"]'


@pytest.fixture(scope="module")
def server():
    return shared_server()


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page()
        page.requests = []
        page.on("request", lambda request: page.requests.append(request.url))
        page.goto(server.url + "/")
        yield page
        browser.close()


def greedy(server, messages: list[dict], max_tokens: int) -> str:
    engine = Engine.from_run(server.run, max_batch=1)
    ids = render_prompt(engine.tokenizer, messages)
    return engine.generate([ids], SamplingParams(max_tokens=max_tokens, temperature=0.0))[0].text


def send(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def test_a_streamed_reply_appears(server, page):
    # without the key the server says so, and the page shows it
    expect = pytest.importorskip("playwright.sync_api").expect  # waits without eval, which the page's CSP forbids
    expect(page.locator("#status")).to_contain_text("API key")
    page.fill("#api-key", KEY)
    page.press("#api-key", "Tab")  # "change": the page reconnects with the key
    expect(page.locator("#model")).to_contain_text("tiny")
    page.fill("#system", "Be brief.")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "40")
    send(page, "What is 2+3?")
    answer = page.locator(ANSWER).last
    answer.and_(page.locator('[data-state="done"]')).wait_for()
    expected = greedy(server, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}], 40)
    assert answer.locator(".text").text_content() == expected
    assert int(answer.get_attribute("data-chunks")) > 1  # it arrived in pieces, as they were made
    assert "completion tokens" in page.text_content("#usage")
    assert all(url.startswith(server.url) for url in page.requests)  # nothing loaded from anywhere else


def test_stop_and_reset(server, page):
    page.click("#reset")
    assert page.locator(".message").count() == 0
    page.fill("#max-tokens", "400")
    disconnects = wait_idle(server)["disconnects"]
    send(page, "Tell me a long story.")
    page.click("#stop", timeout=5000)  # at once: the reply is far from done (see below)
    page.locator(ANSWER).last.and_(page.locator('[data-state="stopped"]')).wait_for()
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    # Nothing is left running on the server (a fetch aborted mid-stream counts as a disconnect).
    assert wait_idle(server)["disconnects"] in (disconnects, disconnects + 1)
    story = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a long story."}]
    assert len(greedy(server, story, 400)) == 400  # left alone, the reply would have run to 400 tokens
    # the stopped exchange left nothing behind: the next reply answers this message alone
    page.click("#reset")
    page.fill("#max-tokens", "20")
    send(page, "Hello")
    page.locator(ANSWER).last.and_(page.locator('[data-state="done"]')).wait_for()
    expected = greedy(server, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}], 20)
    assert page.locator(ANSWER).last.locator(".text").text_content() == expected
