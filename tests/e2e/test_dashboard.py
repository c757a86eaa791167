"""The dashboard in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by selenium) against a real cluster with INFERNO_TOKEN set. It signs in, lists the
pipelines (one a budget stopped, with why), stops one from its button (the row turns `stopped`,
the operation shows in the feed, both through the event stream), shows a clone's validation
error in place and then the clone with its parent link, and draws a point per completed shard.

INFERNO_DASHBOARD_SCREENSHOTS=DIR saves the 1366x768 and phone screenshots there (docs/ holds
the ones the README shows)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = (
    "the dashboard test drives Debian's chromium: install it with `sudo apt-get install -y"
    " chromium chromium-driver` (`make install` does it when run as root)"
)
TOKEN = "dash-" + uuid.uuid4().hex
REASON = "dashboard says: too slow"


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {"INFERNO_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {INSTALL_HINT}")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
    ):
        options.add_argument(argument)
    options.add_argument("--window-size=1366,768")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def settle(action: Callable[[], T]) -> T | None:
    """`action`'s value, or None when the page redrew the element under it (the check runs
    again)."""
    try:
        return action()
    except StaleElementReferenceException:
        return None


def row(browser: WebDriver, pipeline_id: int) -> Any:
    return browser.find_element(By.CSS_SELECTOR, f'tr[data-pipeline-id="{pipeline_id}"]')


def click(browser: WebDriver, selector: str) -> bool:
    browser.find_element(By.CSS_SELECTOR, selector).click()
    return True


def screenshot(browser: WebDriver, name: str) -> None:
    folder = os.environ.get("INFERNO_DASHBOARD_SCREENSHOTS")
    if folder:
        browser.save_screenshot(str(Path(folder) / name))


async def test_page_and_assets_need_no_token_and_data_does(shared_live: Any):
    async with httpx.AsyncClient(base_url=shared_live.cluster.api_url, trust_env=False) as http:
        page = await http.get("/")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
        assert "default-src 'self'" in page.headers["content-security-policy"]
        script = await http.get("/ui/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        missing = await http.get("/ui/..%2Fapp.py")
        assert missing.status_code == 404, missing.text
        assert "error" in missing.json()
        data = await http.get("/api/v1/experiments")
        assert data.status_code == 401, data.text
        history = await http.get("/api/v1/experiments/x/metric-history")
        assert history.status_code == 401, history.text


def listed(browser: WebDriver) -> set[int]:
    rows = browser.find_elements(By.CSS_SELECTOR, "#pipelines tbody tr")
    return {int(r.get_attribute("data-pipeline-id") or -1) for r in rows}


def in_feed(browser: WebDriver, operation: str, text: str) -> str | None:
    """The feed item of a completed `operation` whose text holds `text`."""
    selector = f'#feed li[data-operation="{operation}"][data-status="completed"]'
    return next(
        (li.text for li in browser.find_elements(By.CSS_SELECTOR, selector) if text in li.text),
        None,
    )


def parent_of(browser: WebDriver, name: str) -> int | None:
    """The parent link's pipeline id in the row of pipeline `name`."""
    for r in browser.find_elements(By.CSS_SELECTOR, "#pipelines tbody tr"):
        if name in r.text:
            return int(
                r.find_element(By.CSS_SELECTOR, "a.parent-link").get_attribute("data-parent-id")
                or -1
            )
    return None


def points(browser: WebDriver, metric: str, pipeline_id: int) -> int:
    selector = f'.chart-card[data-metric="{metric}"] g[data-pipeline-id="{pipeline_id}"] .point'
    return len(browser.find_elements(By.CSS_SELECTOR, selector))


def type_json(browser: WebDriver, value: dict[str, Any]) -> None:
    area = browser.find_element(By.ID, "clone-json")
    area.clear()
    area.send_keys(json.dumps(value))


async def test_dashboard_signs_in_steers_and_charts(shared_live: Any, browser: webdriver.Chrome):
    live = shared_live
    created = await live.create_experiment(
        live.experiment_body(
            live.sim("quick", latency_ms=10, accuracy=0.9),
            live.sim("slow", latency_ms=250, accuracy=0.6),
            {**live.sim("capped"), "budget": {"tokens": 1}},  # stopped before its first shard
            name="dash",
        )
    )
    quick, slow, capped = (p["pipeline_id"] for p in created["pipelines"])

    browser.get(live.cluster.api_url + "/")
    await live.until(lambda: browser.find_element(By.ID, "token").is_displayed() or None, "sign-in")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()
    await live.until(lambda: settle(lambda: {quick, slow} <= listed(browser)), "the pipelines")
    assert browser.find_element(By.ID, "live").text == "live"
    why = await live.until(
        lambda: settle(lambda: row(browser, capped).find_element(By.CLASS_NAME, "stopped-by").text),
        "the budget's stop, with its reason",
    )
    assert why.startswith("over budget: pipeline budget: 0 of 1 tokens used"), why

    await live.running(slow, completed=1)
    stop = f'tr[data-pipeline-id="{slow}"] button.stop'
    await live.until(lambda: settle(lambda: click(browser, stop)), "the stop button")
    browser.find_element(By.ID, "confirm-reason").send_keys(REASON)
    browser.find_element(By.ID, "confirm-ok").click()
    stopped = await live.until(
        lambda: settle(lambda: row(browser, slow).get_attribute("data-status") == "stopped"),
        "the row to turn stopped",
    )
    assert stopped
    assert (await live.pipeline(slow))["status"] == "stopped"
    feed = await live.until(lambda: settle(lambda: in_feed(browser, "stop", REASON)), "the feed")
    assert f"pipeline {slow}" in feed  # what
    assert "dashboard" in feed  # who

    clone = f'tr[data-pipeline-id="{quick}"] button.clone'
    await live.until(lambda: settle(lambda: click(browser, clone)), "the clone button")
    knobs = json.loads(browser.find_element(By.ID, "clone-json").get_attribute("value") or "")
    assert knobs["model_config"]["model"] == "sim-quick", knobs
    type_json(browser, {**knobs, "rpm_limit": -5})
    browser.find_element(By.ID, "clone-ok").click()
    error = await live.until(
        lambda: browser.find_element(By.ID, "clone-error").text or None, "the 400 in place"
    )
    assert "rpm_limit" in error, error
    knobs.update(pipeline_name="quick-warm", sampling_params={"temperature": 0.7})
    type_json(browser, knobs)
    browser.find_element(By.ID, "clone-reason").send_keys("try warmer")
    browser.find_element(By.ID, "clone-ok").click()
    parent = await live.until(
        lambda: settle(lambda: parent_of(browser, "quick-warm")), "the clone with its parent"
    )
    assert parent == quick

    done = (await live.settled(quick))[0]
    drawn = await live.until(
        lambda: settle(lambda: points(browser, "exact_match", quick) == done["num_shards"]),
        "a point per shard of the finished pipeline",
    )
    assert drawn
    assert done["shards_completed"] == done["num_shards"]
    screenshot(browser, "dashboard.png")
    browser.set_window_size(390, 844)
    await live.until(lambda: browser.execute_script("return innerWidth <= 400") or None, "phone")
    screenshot(browser, "dashboard-phone.png")
    browser.set_window_size(1366, 768)
    console = [e["message"] for e in browser.get_log("browser")]
    assert any("401" in m for m in console), console  # the log is read: the sign-in's 401
    refused = [m for m in console if "Content Security Policy" in m or "Uncaught" in m]
    assert not refused, refused
