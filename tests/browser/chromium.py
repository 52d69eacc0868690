"""Debian's Chromium for browser tests (Playwright's own browser download cannot work offline)."""

EXECUTABLE = "/usr/bin/chromium"
# Headless as root, and quiet: without the background-networking flags Chromium keeps trying to
# reach Google's hosts, which this closed network refuses.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright):
    return playwright.chromium.launch(executable_path=EXECUTABLE, args=ARGS)
