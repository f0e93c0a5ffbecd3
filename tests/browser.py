"""Headless Debian Chromium driven by Playwright. Playwright never downloads a browser here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Debian's chromium is not installed; `python3 manage.py test` installs it (as root).")
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """The browser; every browser test also fails if a page broke the Content-Security-Policy
    (an inline script or handler, a resource from elsewhere) or threw an uncaught error."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        problems: list[str] = []

        def watch(page: Page) -> None:
            page.on("console", lambda message: problems.append(message.text) if "Content Security Policy" in message.text else None)
            page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))

        new_page, new_context = browser.new_page, browser.new_context

        def watched_page(**options: Any) -> Page:
            page = new_page(**options)
            watch(page)
            return page

        def watched_context(**options: Any) -> BrowserContext:
            context = new_context(**options)
            context.on("page", watch)
            return context

        browser.new_page = watched_page  # type: ignore[method-assign]
        browser.new_context = watched_context  # type: ignore[method-assign]
        try:
            yield browser
        finally:
            browser.close()
        assert problems == [], problems


# Every visible form control must have an accessible name.
UNLABELLED_CONTROLS_JS = """
() => Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(el => el.type !== 'hidden' && el.offsetParent !== null)
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
  .map(el => el.name || el.id || el.outerHTML.slice(0, 80))
"""
