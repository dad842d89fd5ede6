"""Test helper: open an HTML file in headless Chromium, measure its layout, take screenshots.

    result = browser_check("results/demo/report/report.html", width=800, screenshot="shot-800.png")
    result["images"]        # [{"alt", "complete", "width", "height"}]: did every image decode?
    result["page"]          # {"viewport", "scroll_width", "scroll_height"}: does the page overflow sideways?
    result["scrollers"]     # per .table-scroll box: its width, its content's width, its right edge

By hand, for a look at a report:

    python tests/browser.py results/demo/report/report.html shots/      # shots/report-1400.png, -800.png

Not part of the product: gic-tune never starts a browser. Needs a Chromium-family browser on PATH
(Debian: `apt-get install -y chromium`).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Runs on load in a copy of the page: writes what the tests check into a body attribute, which
# --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', function () {
  var root = document.documentElement;
  var probe = {
    title: document.title,
    page: {viewport: window.innerWidth, scroll_width: root.scrollWidth, scroll_height: root.scrollHeight},
    images: Array.from(document.images).map(function (i) {
      return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
              shown_width: i.getBoundingClientRect().width};
    }),
    scrollers: Array.from(document.querySelectorAll('.table-scroll')).map(function (d) {
      var table = d.querySelector('table');
      return {client_width: d.clientWidth, scroll_width: d.scrollWidth,
              right: d.getBoundingClientRect().right, overflow_x: getComputedStyle(d).overflowX,
              table_class: table ? table.className : null,
              nowrap_status: table && table.rows.length > 1 && table.rows[1].cells.length > 1 ?
                getComputedStyle(table.rows[1].cells[1]).whiteSpace : null};
    })
  };
  document.body.setAttribute('data-probe', JSON.stringify(probe));
});
</script>"""


class BrowserError(RuntimeError):
    """No browser, or it failed to render the page."""


def find_browser() -> str | None:
    """A Chromium-family browser on PATH, or None.

    Returns:
        The browser's path, or None when none is installed.
    """
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _flags(browser: str, profile: Path, width: int, height: int) -> list[str]:
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "--virtual-time-budget=5000"]


def browser_check(page: str | Path, width: int = 1400, screenshot: str | Path | None = None,
                  timeout_s: int = 90) -> dict[str, Any]:
    """Render a page at `width` CSS pixels: its images, its width against the viewport, its scroll boxes.

    Args:
        page: the HTML file.
        width: the window's width in pixels.
        screenshot: where to write a PNG of the whole page (the window made as tall as the page,
            at most 12,000 px), or None.
        timeout_s: per browser run.

    Returns:
        {"title", "page": {"viewport", "scroll_width", "scroll_height"}, "images": [...],
        "scrollers": [...], "screenshot": path or None}; see PROBE for the fields.

    Raises:
        BrowserError: no browser, the browser failed, or the probe did not run.
    """
    browser = find_browser()
    if browser is None:
        raise BrowserError("no headless browser found; install one, e.g. `apt-get install -y chromium`")
    page = Path(page).resolve()
    with tempfile.TemporaryDirectory(prefix="gic-browser-") as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(page.read_text().replace("</body>", PROBE + "</body>", 1))
        try:
            dom = subprocess.run([*_flags(browser, Path(tmp) / "profile", width, 1000), "--dump-dom", copy.as_uri()],
                                 capture_output=True, text=True, timeout=timeout_s, check=True).stdout
        except (OSError, subprocess.SubprocessError) as err:
            raise BrowserError(f"{browser}: could not render {page} ({type(err).__name__}: {err})") from None
        match = re.search(r'data-probe="([^"]*)"', dom)
        if not match:
            raise BrowserError(f"{browser}: the probe script did not run on {page}")
        result = json.loads(html.unescape(match.group(1)))
        result["screenshot"] = None
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            height = min(12_000, int(result["page"]["scroll_height"]) + 40)
            try:
                subprocess.run([*_flags(browser, Path(tmp) / "profile", width, height), f"--screenshot={shot}",
                                page.as_uri()], capture_output=True, text=True, timeout=timeout_s, check=True)
            except (OSError, subprocess.SubprocessError) as err:
                raise BrowserError(f"{browser}: no screenshot of {page} ({type(err).__name__}: {err})") from None
            result["screenshot"] = str(shot)
    return result


def problems(result: dict[str, Any]) -> list[str]:
    """What is wrong with a rendered report: images not loaded, a page wider than its viewport, a
    table box wider than the page or not scrolling.

    Args:
        result: browser_check's result.

    Returns:
        One line per problem; [] when none.
    """
    out = [f"image {i['alt']} not loaded" for i in result["images"] if not i["complete"] or not i["width"]]
    out += [f"image {i['alt']} wider than the page ({i['shown_width']:.0f} px)" for i in result["images"]
            if i["shown_width"] > result["page"]["viewport"]]
    page = result["page"]
    if page["scroll_width"] > page["viewport"]:
        out.append(f"the page is {page['scroll_width']} px wide in a {page['viewport']} px viewport")
    for box in result["scrollers"]:
        if box["right"] > page["viewport"] + 0.5:
            out.append(f"a table box ends at {box['right']:.0f} px, past the {page['viewport']} px viewport")
        if box["scroll_width"] > box["client_width"] and box["overflow_x"] not in ("auto", "scroll"):
            out.append("a table wider than its box does not scroll")
    return out


def main(argv: list[str] | None = None) -> int:
    """`python tests/browser.py REPORT_HTML [OUT_DIR]`: screenshots at 1400 and 800 px, problems listed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python tests/browser.py REPORT_HTML [OUT_DIR]", file=sys.stderr)
        return 2
    out = Path(args[1]) if len(args) == 2 else Path(".")
    bad = 0
    for width in (1400, 800):
        try:
            result = browser_check(args[0], width, out / f"report-{width}.png")
        except BrowserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        found = problems(result)
        bad += len(found)
        print(f"{width} px: {len(result['images'])} images, page {result['page']['scroll_width']} x "
              f"{result['page']['scroll_height']} px; {result['screenshot']}")
        for line in found:
            print(f"  problem: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
