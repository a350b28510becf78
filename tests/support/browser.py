"""Debian's Chromium for the browser tests and the console benchmark (Playwright drives it;
Playwright's own browser download is not used)."""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Headless flags this machine needs: without the networking ones Chromium keeps trying
hosts the closed network refuses."""


def launch_chromium(playwright: Any) -> Any:
    """Headless Chromium from /usr/bin; a clear error when it is not installed."""
    executable = shutil.which("chromium")
    if executable is None:
        raise RuntimeError(
            "Debian's chromium is needed for the browser tests: scripts/test.sh installs it "
            "with `apt-get install chromium`."
        )
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
