"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver, driven by Selenium).

Skipped, with the reason, only where Chromium is not installed; required under
LIBWATCH_REQUIRE_BROWSER=1 (what `.ci/run` sets after installing it). With
LIBWATCH_SCREENSHOT_DIR set, the dashboard's screenshot is also saved there, in 64 colours (the README's
docs/web-dashboard.png is made that way).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import tree, unavailable

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1360,900", "--hide-scrollbars")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile; skipped (or failed under LIBWATCH_REQUIRE_BROWSER=1) without one."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        unavailable(f"Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver",
                    "LIBWATCH_REQUIRE_BROWSER")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _click_confirmed(driver: Any, selector: str, *, accept: bool = True) -> None:
    """Click a control and answer its confirmation dialog."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.CSS_SELECTOR, selector).click()
    alert = WebDriverWait(driver, 10).until(expected_conditions.alert_is_present())
    if accept:
        alert.accept()
    else:
        alert.dismiss()


def _wait(driver: Any, check: Any, timeout: float = 45) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(check)


# Read in one script, so that the page reloading itself (every 10 s) between two element
# lookups cannot leave a reference to a node of the old document.
_HISTORY_ROWS = """return Array.from(document.querySelectorAll('#history tbody tr[data-run]'),
    row => Array.from(row.querySelectorAll('td'), cell => cell.innerText.trim()));"""


def _history(driver: Any) -> list[list[str]]:
    return [list(row) for row in driver.execute_script(_HISTORY_ROWS)]


def test_dashboard_run_now_pause_resume(browser: Any, web: Any, photos: Path, libwatch: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    scans = tree(tmp_path / "scans", {f"box{box}/page{page}.png": (40 + page, 60) for box in range(3)
                                      for page in range(4)})
    assert libwatch("library", "add", "scans", str(scans), "--schedule", "daily").code == 0
    server = web()
    browser.get(server.url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#libraries tbody tr")
    assert [row.get_attribute("id") for row in rows] == ["library-photos", "library-scans"]
    photos_row = browser.find_element(By.ID, "library-photos").text
    assert "5" in photos_row and "succeeded" in photos_row and "enabled" in photos_row

    # run now, from the dashboard: the new run appears in the library's history
    _click_confirmed(browser, "#library-scans button[data-action=run]")
    assert "scan started" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    browser.get(server.url + "libraries/scans")
    _wait(browser, lambda driver: any("succeeded" in row for row in _history(driver)))
    (run,) = _history(browser)
    assert run[1:4] == ["scan", "manual", "succeeded"] and "12 added" in run[5]

    # pause, with the confirmation dismissed first (nothing happens), then accepted; resume
    browser.get(server.url + "libraries/photos")
    _click_confirmed(browser, "button[data-action=pause]", accept=False)
    assert browser.find_elements(By.CSS_SELECTOR, "button[data-action=pause]")
    _click_confirmed(browser, "button[data-action=pause]")
    _wait(browser, lambda driver: driver.find_elements(By.CSS_SELECTOR, "button[data-action=resume]"))
    assert browser.find_element(By.CSS_SELECTOR, "h1 .badge").text == "paused"
    assert server.get("/api/v1/libraries/photos").json()["libraries"][0]["paused"] is True
    _click_confirmed(browser, "button[data-action=resume]")
    _wait(browser, lambda driver: driver.find_elements(By.CSS_SELECTOR, "button[data-action=pause]"))
    assert browser.find_element(By.CSS_SELECTOR, "h1 .badge").text == "enabled"
    assert server.get("/api/v1/libraries/photos").json()["libraries"][0]["paused"] is False
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 2

    browser.get(server.url)
    shot = tmp_path / "web-dashboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if target := os.environ.get("LIBWATCH_SCREENSHOT_DIR"):
        from PIL import Image

        with Image.open(shot) as image:  # a 64-colour palette: a third of the size, the same look
            image.convert("RGB").quantize(colors=64).save(Path(target) / shot.name, optimize=True)


def test_the_page_refreshes_itself(browser: Any, web: Any, photos: Path, libwatch: Any) -> None:
    from selenium.webdriver.common.by import By

    server = web()
    browser.get(server.url + "libraries/photos")
    assert len(_history(browser)) == 1
    assert libwatch("scan", "photos").code == 0  # behind the page's back
    _wait(browser, lambda driver: len(_history(driver)) == 2, timeout=25)
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-refresh") == "10"
