#!/usr/bin/env python
"""Render a run's report (both languages) and one school page with headless Chromium.

    scripts/report_check.py [RUN]      (default: the newest run folder under outputs/)

Writes PNG screenshots to RUN/screenshots/ for a person to look at. Installs Debian's
``chromium`` with apt-get when it is missing. Exit 2 with one line on any problem.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = "1200,3000"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    print("chromium not found: installing it (apt-get install -y chromium)", file=sys.stderr)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(cmd, check=False).returncode != 0:
            raise SystemExit(f"error: {' '.join(cmd)} failed; install chromium by hand")
    if found := shutil.which("chromium"):
        return found
    raise SystemExit("error: chromium is still missing after apt-get install")


def screenshot(chromium: str, page: Path, png: Path, *, window: str = WINDOW) -> Path:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={window}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 or not png.is_file():
        tail = (result.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"error: chromium could not render {page}: {tail[0]}")
    return png


def newest_run() -> Path:
    runs = [p for p in (ROOT / "outputs").glob("*") if (p / "run.json").is_file()]
    if not runs:
        raise SystemExit("error: no run folder under outputs/; run `make fit` or give RUN")
    return max(runs, key=lambda p: p.stat().st_mtime)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path, nargs="?", help="run folder (default: newest in outputs/)")
    p.add_argument("--window", default=WINDOW, help=f"width,height in pixels (default {WINDOW})")
    args = p.parse_args(argv)
    from omlbayes.errors import ProjectError
    from omlbayes.report.page import write_report
    from omlbayes.report.schools import write_school_pages

    run = args.run or newest_run()
    try:
        pages = [write_report(run, lang=lang) for lang in ("nl", "en")]
        school_pages = write_school_pages(run)
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # One school page and one region page (the first of each in the index order).
    pages += [p for p in school_pages if p.name.startswith("school-")][:1]
    pages += [p for p in school_pages if p.name.startswith("region-")][:1]
    chromium = find_chromium()
    out = run / "screenshots"
    out.mkdir(exist_ok=True)
    for page in pages:
        png = screenshot(chromium, page, out / f"{page.stem}.png", window=args.window)
        print(f"screenshot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
