#!/usr/bin/env python3
"""Render a report.html in headless Chromium and save what a person would see as a PNG.

    python scripts/screenshot_report.py runs/eval/report.html report.png --height 3000

Used to check reports by eye and by the test suite (which skips when no Chromium is installed;
on Debian: ``apt-get install chromium``). Exits 2 with a message when Chromium or the page is
missing or Chromium produces no image.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["find_chromium", "screenshot"]

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell")


def find_chromium() -> str | None:
    """Path of the first Chromium-family browser on PATH, or ``None``."""
    for name in _BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(
    page: Path, output: Path, *, width: int = 1280, height: int = 2000, timeout: float = 60.0
) -> Path:
    """Screenshot ``page`` at ``width`` x ``height`` CSS pixels into the PNG ``output``.

    :raises FileNotFoundError: no Chromium on PATH, or ``page`` does not exist.
    :raises RuntimeError: Chromium failed or wrote no PNG (its output is in the message).
    :raises subprocess.TimeoutExpired: Chromium took longer than ``timeout`` seconds.
    """
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError(f"no Chromium found on PATH (tried {', '.join(_BROWSERS)})")
    page = page.resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page} does not exist")
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    # A private profile: a running browser's profile lock would otherwise stop the headless one.
    with tempfile.TemporaryDirectory(prefix="screenshot-profile-") as profile:
        completed = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={output}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if completed.returncode != 0 or not output.is_file():
        raise RuntimeError(
            f"{browser} exited with {completed.returncode} and wrote no {output}:\n"
            f"{completed.stderr.strip()[-2000:]}"
        )
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the report.html to render")
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels")
    parser.add_argument("--height", type=int, default=2000, help="window height in CSS pixels")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for Chromium")
    args = parser.parse_args(argv)
    try:
        written = screenshot(args.page, args.output, width=args.width, height=args.height,
                             timeout=args.timeout)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"screenshot_report: {error}", file=sys.stderr)
        return 2
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
