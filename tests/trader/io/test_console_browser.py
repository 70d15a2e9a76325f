"""The operator console in a real browser: Playwright driving Debian's chromium headless.

One paced trader (`run_trade` on the sim feed, in a thread with its own event loop)
serves the console for the whole module; its outbox drains to the Tansu broker and
it follows releases published on the `models` topic and in moto S3, the way
training publishes them. Every wait polls the page with a deadline. Screenshots go
to the test's tmp output (`console-*.png`).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from infra.settings import Settings
from infra.stack import free_port
from tests.helpers import s3_bucket_for, unique
from tests.hotswap_support import Publisher, release_bytes
from trader.io.console.routes import MIN_INTERVAL_S
from trader.live import TradeOptions, run_trade

pytestmark = [pytest.mark.kafka, pytest.mark.s3, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
TOKEN = "console-test-token-5b1e"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def until(
    what: str, check: Callable[[], Any], timeout_s: float = 90.0, every_s: float = 0.05
) -> Any:
    """Return `check()` once it is truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def publish(settings: Settings, raw: bytes) -> None:
    """Publish a release on the `models` topic (from a thread: Playwright owns this one's loop)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(Publisher(settings).to_topic(raw))
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    thread = threading.Thread(target=run, name="publish")
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and not errors, errors


@dataclass
class Trader:
    """A `run_trade` in its own thread and event loop, serving the console on `port`."""

    settings: Settings
    port: int
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Trader:
        opts = TradeOptions(feed="sim", speed=3000.0, http_port=self.port, drain_timeout_s=20)

        async def main() -> None:
            self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
            await run_trade(self.settings, opts, self.stop)

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # reported by the fixture
                self.error = exc

        self.thread = threading.Thread(target=run, name="console-trader", daemon=True)
        self.thread.start()
        until("the trader's API", self._up, 90, 0.2)
        return self

    def _up(self) -> bool:
        if self.error is not None:
            raise AssertionError(f"the trader failed: {self.error!r}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(120)
        assert not self.thread.is_alive(), "the trader did not stop"
        assert self.error is None, f"the trader failed: {self.error!r}"


@pytest.fixture(scope="module")
def trader(make_module_settings: Callable[..., Settings], s3_server: Any) -> Iterator[Trader]:
    bucket = s3_bucket_for(s3_server.address, unique("console"))
    settings = make_module_settings(kafka=True, s3=True, S3_BUCKET=bucket, TRADER_API_TOKEN=TOKEN)
    asyncio.run(Publisher(settings).to_topic(release_bytes(settings, 1)))
    t = Trader(settings, free_port()).start()
    yield t
    t.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


def _updates(page: Page) -> int:
    return int(page.locator("body").get_attribute("data-updates") or 0)


def _points(page: Page) -> int:
    return int(page.locator("#equity").get_attribute("data-points") or 0)


def _rows(page: Page, table: str) -> list[str]:
    return page.locator(f"#{table} tbody tr:not(.empty)").all_inner_texts()


def _open(browser: Browser, url: str, **context: Any) -> tuple[Page, list[str]]:
    """Open the console; return the page and the list of every URL it requests."""
    ctx = browser.new_context(viewport=context.pop("viewport", DESKTOP), **context)
    page = ctx.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{url}/ui")
    until("the first live update", lambda: _updates(page) >= 1, 30)
    return page, requested


def test_positions_decisions_and_equity_curve_update_as_events_arrive(
    trader: Trader, browser: Browser, tmp_path: Path
) -> None:
    page, requested = _open(browser, trader.url)
    assert page.locator("#link").inner_text() == "live"
    first_decisions = until("decisions", lambda: _rows(page, "decisions"), 60)
    points = _points(page)
    # a position shows up with its working stop and target (it lives for a few bars)
    position = until("an open position", lambda: _rows(page, "positions"), 120, 0.02)
    assert position[0].split("\t")[0] in ("ES", "NQ")
    page.screenshot(path=str(tmp_path / "console-position.png"))
    until("more closed trades on the equity curve", lambda: _points(page) >= points + 2, 120)
    assert page.locator("#equity path.line").count() == 1
    assert page.locator("#equity path.line").get_attribute("d", timeout=1000)
    until("newer decisions", lambda: _rows(page, "decisions") != first_decisions, 60)
    assert _rows(page, "fills"), "order events are listed"
    assert _rows(page, "today"), "today's per symbol/strategy numbers are listed"
    kpi = page.locator("#kpi-trades").inner_text()
    assert int(kpi) >= 2
    page.screenshot(path=str(tmp_path / "console-desktop.png"), full_page=True)
    # the same state, from the JSON snapshot, as a cross-check of the page
    state = httpx.get(f"{trader.url}/ui/state", timeout=5).json()
    assert state["account"]["trades"] >= int(kpi)
    # the phone width: no horizontal scrolling of the page itself
    phone, _ = _open(browser, trader.url, viewport=PHONE)
    width = phone.locator("main").bounding_box()
    assert width is not None and width["width"] <= PHONE["width"]
    phone.screenshot(path=str(tmp_path / "console-phone.png"))
    assert all(u.startswith(trader.url) for u in requested), requested


def test_a_hot_swap_shows_up_live(trader: Trader, browser: Browser, tmp_path: Path) -> None:
    page, _ = _open(browser, trader.url)
    until("release r1", lambda: page.locator("#top-release").inner_text() == "r1", 60)
    publish(trader.settings, release_bytes(trader.settings, 2))
    until("release r2", lambda: page.locator("#top-release").inner_text() == "r2", 90)
    swaps = until("the swap in the list", lambda: _list(page, "swaps"), 30)
    assert "r2" in swaps[0] and "replaced r1" in swaps[0]
    models = page.locator("#models").inner_text()
    assert "meta v2" in models and "auc 0.600" in models and "release" in models
    page.screenshot(path=str(tmp_path / "console-swap.png"))


def _list(page: Page, name: str) -> list[str]:
    return page.locator(f"#{name} li:not(.empty)").all_inner_texts()


def test_hostile_strings_in_events_are_shown_as_text(
    trader: Trader, browser: Browser, tmp_path: Path
) -> None:
    # the CSP would stop an injected handler anyway: bypass it, so only escaping protects
    page, _ = _open(browser, trader.url, bypass_csp=True)
    title = page.title()
    raw = release_bytes(trader.settings, 3, release=HOSTILE)
    publish(trader.settings, raw)
    # the release name arrives in the manifest event: served, or refused with its name
    until("the hostile release name", lambda: HOSTILE in page.locator("body").inner_text(), 90)
    # a hostile kill-switch reason, typed by an operator, goes through POST /kill
    resp = httpx.post(
        f"{trader.url}/kill",
        json={"by": HOSTILE, "reason": HOSTILE},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    try:
        until(
            "the hostile kill reason",
            lambda: f"ENGAGED by {HOSTILE}: {HOSTILE}" in page.locator("#health").inner_text(),
            30,
        )
        assert page.locator('img[src="x"]').count() == 0
        assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
        assert page.title() == title != "pwned"
        page.screenshot(path=str(tmp_path / "console-hostile.png"), full_page=True)
    finally:
        httpx.post(
            f"{trader.url}/resume",
            json={"by": "test"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        ).raise_for_status()


def test_the_kill_switch_button_needs_the_token_and_a_confirmation(
    trader: Trader, browser: Browser, tmp_path: Path
) -> None:
    page, _ = _open(browser, trader.url)
    until("the switch to be off", lambda: page.locator("#kill-open").is_visible(), 30)
    page.get_by_role("button", name="Kill switch…").click()
    dialog = page.locator("#kill-dialog")
    assert dialog.is_visible()
    page.get_by_label("API token (TRADER_API_TOKEN)").fill("wrong-token")
    page.get_by_label("Reason").fill("operator drill")
    page.get_by_role("button", name="Engage", exact=True).click()
    assert "I confirm" in page.locator("#kill-error").inner_text()  # no confirmation, no call
    page.get_by_label("I confirm").check()
    page.get_by_role("button", name="Engage", exact=True).click()
    until("the 401", lambda: "401" in page.locator("#kill-error").inner_text(), 10)
    assert page.locator("#status").inner_text().lower() != "halted"
    page.get_by_label("API token (TRADER_API_TOKEN)").fill(TOKEN)
    page.get_by_role("button", name="Engage", exact=True).click()
    until("the halt", lambda: page.locator("#status").inner_text().lower() == "halted", 30)
    assert "ENGAGED by console: operator drill" in page.locator("#health").inner_text()
    page.screenshot(path=str(tmp_path / "console-halted.png"))
    page.get_by_role("button", name="Resume…").click()
    page.get_by_label("API token (TRADER_API_TOKEN)").fill(TOKEN)
    page.get_by_label("I confirm").check()
    page.get_by_role("button", name="Resume", exact=True).click()
    until("the resume", lambda: page.locator("#kill-open").is_visible(), 30)
    assert "off" in page.locator("#health").inner_text()


def test_the_page_is_small_self_contained_and_paints_fast(trader: Trader, browser: Browser) -> None:
    page, requested = _open(browser, trader.url, bypass_csp=True)
    # every request went to the trader itself: no CDN, no font service, no analytics
    assert requested and all(u.startswith(f"{trader.url}/ui") for u in requested), requested
    sizes = {u: len(httpx.get(u, timeout=5).content) for u in requested if "/ui/events" not in u}
    assert sum(sizes.values()) < 300_000, sizes
    for u in sizes:
        body = httpx.get(u, timeout=5).text
        # the SVG namespace is a name, never fetched
        rest = body.replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in rest and "https://" not in rest, u
    paint_ms = page.evaluate(
        "performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)[0]"
    )
    assert paint_ms is not None and paint_ms < 1000, paint_ms
    headers = httpx.get(f"{trader.url}/ui", timeout=5).headers
    assert "script-src 'self'" in headers["content-security-policy"]


def test_the_stream_coalesces_bursts_and_sends_only_changes(trader: Trader) -> None:
    """At 3000x the engine publishes many facts a second; the stream sends at most ~4."""
    stamps: list[float] = []
    bodies: list[str] = []
    with httpx.stream("GET", f"{trader.url}/ui/events", timeout=30) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                stamps.append(time.monotonic())
                bodies.append(line.removeprefix("data: "))
            if len(stamps) == 9:
                break
    spacing_s = (stamps[-1] - stamps[1]) / 7  # the first message is sent at once
    assert spacing_s >= MIN_INTERVAL_S * 0.9, spacing_s
    states = [{k: v for k, v in orjson.loads(b).items() if k != "sent_at"} for b in bodies]
    for before, after in itertools.pairwise(states):
        assert before != after, "a message was sent without a change"
