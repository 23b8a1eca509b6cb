"""The dashboard in a real browser: `tapewatch dashboard` as a subprocess on seeded PostgreSQL and Redis, headless
Chromium through chromedriver (Debian's packages; `make test` installs them). Every page is opened, its key
elements checked against the seeded data and screenshotted under var/screenshots/; Pause and Resume are clicked
and the control state is read back from Redis. ``TAPEWATCH_UPDATE_README_SCREENSHOT=1`` also copies the Live
page's screenshot to docs/screenshots/live.png (the README's picture)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis

from tapewatch.adapters.dashboard_queries import recent_actions
from tapewatch.adapters.db import Database
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tests.adapters.signal_builders import entry
from tests.dashboard.support import (
    NOW_MS,
    T0,
    dashboard_process,
    publish_open,
    seed_daily_report,
    seed_rescan,
    seed_signals,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGES = {
    "live": ("/", "live-open-grid"),
    "performance": ("/performance", "performance-symbols"),
    "quality": ("/quality", "quality-bands"),
    "system": ("/system", "system-components"),
    "universe": ("/universe", "universe-rescan"),
    "health": ("/health", "health-pause"),
    "reports": ("/reports", "reports-body"),
}


def _browser_or_skip() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    reason = (
        "headless Chromium is not installed: `apt-get install -y chromium chromium-driver` "
        "(`make test` does it when run as root with apt)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason + " — required in CI")
    pytest.skip(reason)


@pytest.fixture
def dashboard_url(migrated_database_url: str, redis_url: str, redis_keys: Keyspace) -> Iterator[str]:
    with dashboard_process(migrated_database_url, redis_url, redis_keys, TAPEWATCH_DASHBOARD_REFRESH="1") as (
        url,
        _,
    ):
        yield url


def _driver(profile: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _choose(driver, wait, dropdown: str, label: str) -> None:  # type: ignore[no-untyped-def]
    """Open the Dash dropdown ``dropdown`` and pick its option ``label``."""
    from selenium.webdriver.common.by import By

    def option(d):  # type: ignore[no-untyped-def]
        found = (o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]") if o.text.strip() == label)
        return next(found, None)

    driver.find_element(By.ID, dropdown).click()
    wait.until(option).click()


def test_every_page_in_a_real_browser(
    dashboard_url: str, migrated_database_url: str, redis_url: str, redis_keys: Keyspace
) -> None:
    _browser_or_skip()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    db = Database(migrated_database_url)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    state = RedisState.from_url(redis_url, keys=redis_keys)
    try:
        made = seed_signals(db)
        publish_open(client, redis_keys, made["open"])
        client.set(
            redis_keys.symbol_features("SOLUSDT"),
            msgspec.json.encode(
                {"ts": NOW_MS, "features": {"price": made["open"].entry_price, "imbalance_top10": 0.41}}
            ),
        )
        state.beat("realtime")
        seed_rescan(db)
        seed_daily_report(db, markdown="# Daily 2024-01-01", html="<h1>Daily 2024-01-01</h1><p>3 signals</p>")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tw-chromium-") as profile:
            driver = _driver(Path(profile))
            wait = WebDriverWait(driver, 30)
            try:
                for name, (path, key) in PAGES.items():
                    driver.get(dashboard_url + path)
                    wait.until(ec.presence_of_element_located((By.ID, key)))
                    if name == "live":
                        # the open signal from Redis and the history rows from PostgreSQL
                        wait.until(lambda d: "SOLUSDT" in d.find_element(By.ID, "live-open-grid").text)
                        wait.until(lambda d: "ETHUSDT" in d.find_element(By.ID, "live-history-grid").text)
                        assert "TRIGGERED" in driver.find_element(By.ID, "live-open-grid").text
                        # the symbol panel: the open signal's symbol, with its features from Redis
                        wait.until(lambda d: "0.41" in d.find_element(By.ID, "live-book").text)
                        assert (
                            "top levels Σ qty" in driver.find_element(By.ID, "live-book").text
                        )  # no book yet
                        # a signal issued while the page is open appears without a reload
                        publish_open(client, redis_keys, entry("XRPUSDT", T0 + 100 * 60_000))
                        wait.until(lambda d: "XRPUSDT" in d.find_element(By.ID, "live-open-grid").text)
                    elif name == "performance":
                        _choose(driver, wait, "performance-period", "all")
                        wait.until(lambda d: "BTCUSDT" in d.find_element(By.ID, "performance-symbols").text)
                    elif name == "quality":
                        _choose(driver, wait, "quality-period", "all")
                        wait.until(lambda d: "No finished signals in this period" not in d.page_source)
                        wait.until(
                            lambda d: d.find_elements(By.CSS_SELECTOR, "#quality-bands .trace.bars path")
                        )
                    elif name == "system":
                        wait.until(lambda d: "realtime" in d.find_element(By.ID, "system-components").text)
                    elif name == "health":
                        driver.find_element(By.ID, "health-reason").send_keys("browser test")
                        driver.find_element(By.ID, "health-pause").click()
                        wait.until(lambda d: state.read_control().paused_reason == "browser test")
                        wait.until(lambda d: "PAUSED" in d.find_element(By.ID, "health-control").text)
                        driver.find_element(By.ID, "health-resume").click()
                        wait.until(lambda d: not state.read_control().paused)
                        wait.until(lambda d: "resume" in d.find_element(By.ID, "health-actions").text)
                    elif name == "universe":
                        wait.until(
                            lambda d: "DOGEUSDT" in d.page_source and "below_min_volume" in d.page_source
                        )
                        assert "No universe rescan yet" not in driver.page_source
                    elif name == "reports":
                        frame = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#reports-body iframe"))
                        driver.switch_to.frame(frame)
                        wait.until(lambda d: "Daily 2024-01-01" in d.find_element(By.TAG_NAME, "body").text)
                        driver.switch_to.default_content()
                    time.sleep(0.5)  # let charts finish drawing before the screenshot
                    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
            finally:
                driver.quit()
        # who pressed, as the HTTP request said: no login configured, from this machine
        recorded = [(a.action, a.result, a.actor, a.client_addr) for a in reversed(recent_actions(db))]
        assert recorded == [
            ("pause", "ok", "anonymous", "127.0.0.1"),
            ("resume", "ok", "anonymous", "127.0.0.1"),
        ]
        if os.environ.get("TAPEWATCH_UPDATE_README_SCREENSHOT") == "1":  # tests never touch tracked files
            docs = ROOT / "docs" / "screenshots"
            docs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SCREENSHOTS / "live.png", docs / "live.png")
    finally:
        state.close()
        client.close()
        db.dispose()
