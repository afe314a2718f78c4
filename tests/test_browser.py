"""The chat page in a real browser: Debian's Chromium driven by Playwright against a live uvicorn server
over a real pipeline run (25 best-selling UCI Online Retail SKUs) and the bundled language model."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from api.app import create_app
from api.config import APISettings
from forecasting.factbook import FactBook
from forecasting.settings import get_settings

SKU = "85123A"


@pytest.fixture(autouse=True)
def stockpilot_home(pipeline_home):
    """Overrides the per-test home: the server and the tests share the module's pipeline run."""
    get_settings.cache_clear()
    return pipeline_home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(pipeline_home):
    """A real uvicorn server in a thread; yields (base URL, API key)."""
    import uvicorn

    app = create_app(APISettings(api_scheduler=False))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", app.state.api_keys[0]
    srv.should_exit = True
    thread.join(timeout=10)


def test_chat_page_streams_an_answer_with_facts_and_chart(server, browser, tmp_path):
    url, key = server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    assert page.is_visible("#key-panel")  # no key stored yet: the page asks for it
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    assert page.is_hidden("#key-panel")
    page.wait_for_function("document.getElementById('run-info').textContent.includes('SKUs')")
    assert f"{len(FactBook.from_store().skus)} SKUs" in page.text_content("#run-info")
    # count text updates of the answer while it streams (before the final answer replaces it)
    page.evaluate(
        """() => {
        window.__streamed = 0;
        new MutationObserver((records) => {
          for (const r of records) {
            const node = r.target.nodeType === 3 ? r.target.parentElement : r.target;
            if (node && node.classList && node.classList.contains('streaming')) window.__streamed += 1;
          }
        }).observe(document.getElementById('conversation'),
                   {subtree: true, childList: true, characterData: true});
      }"""
    )
    page.fill("#question", f"How many {SKU} will we sell next week?")
    page.press("#question", "Enter")
    answer = page.locator(".msg.assistant").last
    page.locator(".msg.assistant[data-state]").wait_for(timeout=300_000)
    assert answer.get_attribute("data-state") == "done", answer.inner_text()
    assert page.evaluate("window.__streamed") >= 1
    assert SKU in answer.locator(".answer-text").inner_text()

    rows = answer.locator("table.facts tbody tr")
    assert rows.count() >= 3
    names = rows.locator("td:first-child").all_inner_texts()
    assert "forecast next week" in names
    assert answer.locator("ul.sources li").count() >= 1

    answer.locator("figure.chart svg path.history").wait_for(timeout=30_000)
    for part in ("path.history", "path.forecast", "path.band"):
        d = answer.locator(f"figure.chart svg {part}").get_attribute("d")
        assert d and d.count("L") >= 3, part
    box = answer.locator("figure.chart svg").bounding_box()
    assert box["width"] > 400 and box["height"] > 100
    assert "90% interval" in answer.locator("figure.chart").inner_text()
    answer.locator("figure.chart").scroll_into_view_if_needed()
    shot = tmp_path / "chat-laptop.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    # phone width: the page reflows without sideways scrolling, the chart fits the screen
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.evaluate("(m => m.scrollWidth <= m.clientWidth + 1)(document.querySelector('main'))")
    assert answer.locator("figure.chart svg").bounding_box()["width"] <= 390
    assert page.locator("#ask-form").bounding_box()["y"] + 40 <= 844  # the question box stays on screen
    answer.locator("table.facts").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "chat-phone.png"))
    assert not errors, errors


def test_wrong_key_asks_for_the_key_again(server, browser):
    url, _ = server
    page = browser.new_page()
    page.goto(url + "/#key=not-the-key")
    assert page.evaluate("localStorage.getItem('stockpilot-api-key')") == "not-the-key"
    assert "#key" not in page.url  # the key is taken out of the address bar
    page.fill("#question", f"Should I reorder {SKU}?")
    page.press("#question", "Enter")
    page.locator(".msg.assistant[data-state=error]").wait_for(timeout=30_000)
    assert "API key" in page.locator(".msg.assistant").last.inner_text()
    assert page.is_visible("#key-panel")
