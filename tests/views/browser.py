"""Headless Chromium for the view tests: Debian's ``chromium`` and ``chromium-driver`` (installed by
``.ci/install``), driven by Selenium. Nothing is downloaded: the driver and browser are found on the
PATH (or named by ``HOOKED_CHROMEDRIVER`` / ``HOOKED_CHROMIUM``), and Selenium Manager is kept offline.

:func:`start` raises :class:`BrowserUnavailable` with the reason when the browser cannot start; the
fixture turns that into a failed test, never a skipped one.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class BrowserUnavailable(RuntimeError):
    pass


def start(width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium driven by Selenium, with the browser console recorded."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise BrowserUnavailable(f"selenium is not installed ({e}); pip install -e '.[test]'") from None
    driver_path = os.environ.get("HOOKED_CHROMEDRIVER") or shutil.which("chromedriver")
    binary = os.environ.get("HOOKED_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not driver_path or not binary:
        raise BrowserUnavailable(
            f"no {'chromedriver' if not driver_path else 'chromium'} on the PATH: run .ci/install as root "
            "(apt-get install chromium chromium-driver), or set HOOKED_CHROMEDRIVER / HOOKED_CHROMIUM"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try the network
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--allow-file-access-from-files",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(options=options, service=Service(driver_path))
    except Exception as e:  # selenium's errors carry the browser's own reason
        raise BrowserUnavailable(
            f"headless chromium ({binary}, driver {driver_path}) did not start: {e}"
        ) from None


def load(driver: Any, path: str | Path, timeout: float = 20.0) -> list[dict]:
    """Open ``path`` as a file URL, wait for the views to be drawn; returns the console's errors."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(Path(path).resolve().as_uri())
    deadline = time.monotonic() + timeout
    while driver.execute_script("return document.readyState") != "complete":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not finish loading in {timeout} s")
        time.sleep(0.05)
    return errors(driver)


def errors(driver: Any) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot_is_blank(driver: Any) -> tuple[bool, str]:
    """Whether the visible page is (nearly) one colour: a page whose drawing failed."""
    from PIL import Image

    img = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    small = img.resize((200, 150))
    colors = small.getcolors(maxcolors=200 * 150)
    top = max(c for c, _ in colors)
    share = 1 - top / (200 * 150)
    return share < 0.01 or len(colors) < 8, f"{len(colors)} colours, {share:.1%} of pixels off the background"


def hover_text(driver: Any, element: Any) -> str:
    """Move the mouse onto ``element``; the text of the view's tooltip."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(element).perform()
    root = element.find_element("xpath", "./ancestor::div[contains(@class, 'hv-view')]")
    tip = root.find_element("css selector", ".hv-tip")
    deadline = time.monotonic() + 3
    while not tip.is_displayed() and time.monotonic() < deadline:
        time.sleep(0.05)
    return tip.text


def open_view(driver: Any, view: Any, path: str | Path) -> Any:
    """Save ``view`` to ``path``, open it, check there are no console errors and that it is not blank;
    returns the view's root element."""
    view.save(path)
    errs = load(driver, path)
    assert not errs, f"JavaScript errors on {path}: {errs}"
    blank, why = screenshot_is_blank(driver)
    assert not blank, f"{path} looks blank: {why}"
    assert driver.execute_script("return hookedViews.errors.length") == 0
    return driver.find_element("css selector", "div.hv-view")


def cells(root: Any, row: int, col: int) -> Any:
    """The heatmap cell at ``row``, ``col`` under ``root``."""
    return root.find_element("css selector", f"rect.hv-cell[data-row='{row}'][data-col='{col}']")
