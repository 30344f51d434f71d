"""Screenshots of the interactive graph page for docs/graphs.md, taken in headless Chromium.

    PYTHONPATH=src python3 docs/page_screenshots.py        # writes docs/images/graph_page_*.png

Needs Graphviz, Debian's chromium and chromium-driver, and selenium (as the browser tests do).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import headless_chromium, missing_reason  # noqa: E402

from normlab.cli import main  # noqa: E402

IMAGES = ROOT / "docs" / "images"
WIDTH = 1400


def go_to(driver, phase: str, node: str, shape: str = "4,3", seed: str = "0") -> None:
    """Choose the sample, then click `next` from the first step until the page shows (phase, node)."""
    driver.execute_script("""
        const [phase, node, shape, seed] = arguments;
        for (const [id, value] of [["shape", shape], ["seed", seed]]) {
            const select = document.getElementById(id);
            select.value = value;
            select.dispatchEvent(new Event("change"));
        }
        document.getElementById("first").click();
        for (let k = 0; k < 100; k++) {
            if (document.body.dataset.phase === phase && document.body.dataset.node === node) return;
            document.getElementById("next").click();
        }
        throw new Error("never reached " + phase + " " + node);""", phase, node, shape, seed)


def shoot(driver, name: str, height: int | None = None) -> Path:
    """A screenshot of the page, WIDTH wide and as tall as its content (or `height`)."""
    content = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": WIDTH, "height": height or content, "deviceScaleFactor": 1, "mobile": False})
    path = IMAGES / name
    path.write_bytes(driver.get_screenshot_as_png())
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


def main_() -> int:
    reason = missing_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "batchnorm.html"
        if main(["graph", "batchnorm", "--shape", "4,3", "--seed", "0", "--out", str(page)]) != 0:
            return 1
        with headless_chromium(width=WIDTH, height=900) as driver:
            driver.get(page.as_uri())
            go_to(driver, "forward", "xhat")
            print("wrote", shoot(driver, "graph_page_forward.png", height=760))
            go_to(driver, "backward", "xmu")
            print("wrote", shoot(driver, "graph_page_backward.png", height=760))
            go_to(driver, "backward", "mu", shape="16,5", seed="1")
            print("wrote", shoot(driver, "graph_page_heatmap.png"))
            errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
            if errors:
                print(f"error: the browser logged {errors}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main_())
