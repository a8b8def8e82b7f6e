"""The chat page at GET /, driven in headless Chromium (Playwright) against the shared server.

Every step waits on a state: the page's DOM (Playwright's `expect`, which retries until it holds)
or the server's (/health). A reply of the tiny model streams in a fraction of a second, faster
than a busy machine performs one click, so a test that needs a reply unfinished holds it: the
server process stopped, or a stand-in reply that stalls after its first words. SAFETY_NET_MS only
bounds how long a broken page can hang the run; no step relies on time passing or not.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from groklm.infer.engine import Engine, SamplingParams
from groklm.tokenizer.chat import render_prompt

from helpers.servers import BLOCK_SIZE, KEY, held, wait_idle

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect  # waits without eval, which the page's CSP forbids

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SAFETY_NET_MS = 60_000
ANSWER = '.message[data-role="assistant"]'
COMPLETIONS = "**/v1/chat/completions"
SYSTEM = "Be brief."
FIRST_WORDS = "Once upon"


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=SAFETY_NET_MS)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """A fresh page for each test, so that no test depends on what another left on the page."""
    page = browser.new_page()
    page.set_default_timeout(SAFETY_NET_MS)
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto(server.url + "/")
    yield page
    page.close()


@pytest.fixture
def stalled():
    """The URL of a stand-in for /v1/chat/completions whose reply stops after FIRST_WORDS and
    stays open until the test ends: the page is certainly mid-reply for as long as the test needs."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunk = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": FIRST_WORDS}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            release.wait()

        def log_message(self, *args):  # the test's output is the page, not this server's log
            pass

    stand_in = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{stand_in.server_port}/v1/chat/completions"
    release.set()
    stand_in.shutdown()
    stand_in.server_close()


def stall_next_reply(page, stalled: str) -> None:
    """The page's next chat request goes to the `stalled` stand-in; the ones after, to the server."""
    page.route(COMPLETIONS, lambda route: route.continue_(url=stalled), times=1)


def connect(page) -> None:
    """Give the page the key once its first, keyless request has been refused, as a user would."""
    expect(page.locator("#status")).to_contain_text("API key")
    page.fill("#api-key", KEY)
    page.press("#api-key", "Tab")  # "change": the page reconnects with the key
    expect(page.locator("#model")).to_contain_text("tiny")
    expect(page.locator("#status")).to_be_empty()


def settings(page, max_tokens: int) -> None:
    page.fill("#system", SYSTEM)
    page.fill("#temperature", "0")
    page.fill("#max-tokens", str(max_tokens))


def send(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def sent_messages(page, text: str) -> list[dict]:
    """Send `text`; the messages the page's request carried."""
    with page.expect_request(COMPLETIONS) as request:
        send(page, text)
    return json.loads(request.value.post_data)["messages"]


def reply(page, state: str):
    """The last reply, once the page shows it in `state` (streaming, done, stopped)."""
    answer = page.locator(ANSWER).last
    expect(answer).to_have_attribute("data-state", state)
    return answer


def greedy(server, messages: list[dict], max_tokens: int) -> str:
    engine = Engine.from_run(server.run, max_batch=1)
    ids = render_prompt(engine.tokenizer, messages)
    return engine.generate([ids], SamplingParams(max_tokens=max_tokens, temperature=0.0))[0].text


def kept(health: dict) -> int:
    """Requests the server took and did not cut off for a disconnect: answered, or still running."""
    return health["requests"] - health["disconnects"]


def alone(text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def test_a_streamed_reply_appears(server, page):
    connect(page)  # without the key the server says so, and the page shows it
    settings(page, max_tokens=40)
    send(page, "What is 2+3?")
    answer = reply(page, "done")
    assert answer.locator(".text").text_content() == greedy(server, alone("What is 2+3?"), 40)
    assert int(answer.get_attribute("data-chunks")) > 1  # it arrived in pieces, as they were made
    expect(page.locator("#usage")).to_contain_text("completion tokens")
    assert all(url.startswith(server.url) for url in page.requests)  # nothing loaded from anywhere else


def test_stop_and_reset(server, page):
    connect(page)
    settings(page, max_tokens=400)
    before = wait_idle(server)
    with held(server):
        send(page, "Tell me a long story.")
        reply(page, "streaming")
        expect(page.locator("#send")).to_be_disabled()  # one reply at a time
        page.click("#stop")
        reply(page, "stopped")
        expect(page.locator("#send")).to_be_enabled()
        expect(page.locator("#stop")).to_be_disabled()
    # Nothing is left running on the server: the closed connection cut the request short (a
    # disconnect) wherever it was, instead of letting it run its 400 tokens for nobody.
    wait_idle(server, until=lambda now: kept(now) == kept(before))
    # Nothing came back, so the page forgets the question: the next reply answers "Hello" alone.
    expect(page.locator(".message.failed")).to_have_count(2)
    settings(page, max_tokens=20)
    assert sent_messages(page, "Hello") == alone("Hello")
    hello = greedy(server, alone("Hello"), 20)
    assert reply(page, "done").locator(".text").text_content() == hello
    # New conversation starts over: the log is empty and "Hello" is answered alone again.
    page.click("#reset")
    expect(page.locator(".message")).to_have_count(0)
    assert sent_messages(page, "Hello") == alone("Hello")
    assert reply(page, "done").locator(".text").text_content() == hello


def test_a_conversation_with_less_room_than_max_tokens_still_gets_its_reply(server, page):
    """The server refuses a max_tokens the context cannot hold after the prompt, as OpenAI's does;
    the page's "max tokens" is a ceiling, so it asks again without one and the reply runs to the
    end of the context."""
    connect(page)
    settings(page, max_tokens=10 * BLOCK_SIZE)  # the page asks for at most the context: with the prompt, too much
    asked = []
    page.on("request", lambda request: asked.append(json.loads(request.post_data)) if request.method == "POST" else None)
    send(page, "Hello")
    answer = reply(page, "done")
    assert [body.get("max_tokens") for body in asked] == [BLOCK_SIZE - 1, None]
    assert answer.locator(".text").text_content() == greedy(server, alone("Hello"), BLOCK_SIZE)
    expect(page.locator("#status")).to_be_empty()


def story_begins_and_stalls(page, stalled) -> None:
    """Ask for a story whose reply (from the stalled stand-in) shows its first words and stops coming."""
    connect(page)
    settings(page, max_tokens=20)
    stall_next_reply(page, stalled)
    send(page, "Tell me a long story.")
    expect(reply(page, "streaming").locator(".text")).to_have_text(FIRST_WORDS)


def test_stop_keeps_the_words_so_far(server, page, stalled):
    story_begins_and_stalls(page, stalled)
    page.click("#stop")
    expect(reply(page, "stopped").locator(".text")).to_have_text(FIRST_WORDS)
    # what was shown is part of the conversation: the next request carries it
    story = [*alone("Tell me a long story."), {"role": "assistant", "content": FIRST_WORDS}]
    assert sent_messages(page, "Go on.") == [*story, {"role": "user", "content": "Go on."}]
    reply(page, "done")


def test_new_conversation_while_a_reply_streams(server, page, stalled):
    story_begins_and_stalls(page, stalled)
    page.click("#reset")
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#send")).to_be_enabled()  # the abandoned reply has let go of the page
    # the abandoned reply's words do not land in the new conversation: "Hello" is sent alone
    assert sent_messages(page, "Hello") == alone("Hello")
    reply(page, "done")


def test_the_latest_key_wins(server, page):
    # The page's first, keyless load waits (held by the test) while the user types the key: the
    # page drops it, so its late refusal cannot undo the connection made with the key.
    page.route("**/v1/models", lambda route: None, times=1)
    with page.expect_request("**/v1/models"):
        page.reload()
    with page.expect_event("requestfailed", lambda request: request.url.endswith("/v1/models")):
        page.fill("#api-key", KEY)
        page.press("#api-key", "Tab")
    expect(page.locator("#model")).to_contain_text("tiny")
    expect(page.locator("#status")).to_be_empty()
