from __future__ import annotations

import pytest

from tests.views import browser as chromium


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module. A browser that cannot start fails the test, with the reason."""
    try:
        driver = chromium.start()
    except chromium.BrowserUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    yield driver
    driver.quit()
