"""A real run's report.html in a real browser (headless Chromium, Debian's package; ``.ci/run`` installs it): the page
loads with every image present and decoded, each plot is shown at its own pixel size (so its labels keep the size
they were drawn at: no validation-metrics grid squeezed into half the page, no 5-px confusion-matrix labels), and
the screenshot is not blank."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import finescale_in_process

pytestmark = pytest.mark.slow

WINDOW = (1400, 3000)
# Written into a copy of the page: what the browser made of each image once the page has loaded.
PROBE = """<pre id="probe">pending</pre><script>
window.addEventListener("load", () => {
  const seen = Array.from(document.images).map((i) => ({src: i.getAttribute("src"), complete: i.complete,
    natural: [i.naturalWidth, i.naturalHeight], shown: [i.clientWidth, i.clientHeight]}));
  document.getElementById("probe").textContent = JSON.stringify(seen);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip(
        "no Chromium on this machine: .ci/run installs Debian's (apt-get install chromium), apt was unavailable"
    )


def browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ]
    cmd = [chromium(), *flags, *args, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)


def test_report_loads_every_image_at_its_own_size(length_run: Path, implants: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(length_run, run)
    finescale_in_process("length", "eval", "--checkpoint", run, "--json", implants / "test.json")  # the page's plots
    report = run / "report.html"
    page = report.read_text()

    # every image the page names, loaded and decoded by the browser, drawn at its own size
    probe = run / "probe.html"  # beside the report, so that relative image paths resolve the same way
    probe.write_text(page.replace(' loading="lazy"', "").replace("</main></body>", f"</main>{PROBE}</body>"))
    dom = browse(probe, tmp_path / "profile-probe", "--virtual-time-budget=10000", "--dump-dom").stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found and found.group(1) != "pending", dom[-2000:]
    images = json.loads(found.group(1))
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert [i["src"] for i in images] == srcs and len(srcs) >= 5, srcs  # curves and the evaluation's plots
    names = {Path(s).name for s in srcs}
    assert {"curves_losses.png", "curves_val_metrics.png", "length_confusion.png"} <= names
    for image in images:
        assert (run / image["src"]).is_file(), image
        assert image["complete"] and min(image["natural"]) > 0, f"not decoded: {image}"
        width, shown = image["natural"][0], image["shown"][0]
        assert shown >= 0.95 * width, f"{image['src']} squeezed to {shown / width:.0%} of its {width} px"

    # the page as a person sees it: a screenshot that is not blank
    shot = tmp_path / "report.png"
    browse(report, tmp_path / "profile-shot", "--hide-scrollbars", f"--screenshot={shot}")
    import cv2

    pixels = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
    assert pixels is not None and pixels.shape == (WINDOW[1], WINDOW[0])
    ink = pixels < 200  # text, axes, bars and dots against the page's near-white
    assert ink.mean() > 0.02 and float(np.std(pixels)) > 10, f"blank screenshot: {ink.mean():.3%} ink"
    assert ink[: WINDOW[1] // 2].mean() > 0.01 and ink[WINDOW[1] // 2 :].mean() > 0.01  # drawn all the way down
