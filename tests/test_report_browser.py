"""report.html in a real browser: every figure loads and nothing is fetched from the network.

Runs headless Chromium through selenium and /usr/bin/chromedriver. Without a browser the tests skip
and say why, except under CI (the CI environment variable set), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from mlflow_xai.artifacts import write_artifacts
from mlflow_xai.datasets import make_shapes
from mlflow_xai.engine import audit
from mlflow_xai.probe import ProbeSet

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Figures of an image audit with IG and occlusion: 2 sheets, 1 worst-samples sheet, 3 convergence
# figures, 2 histograms and the per-class summary.
EXPECTED_IMAGES = 9


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install chromium chromium-driver; package {package})"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = _missing_browser()
    if missing:
        if _in_ci():
            pytest.fail(f"CI is set but the browser test cannot run: {missing}")
        pytest.skip(f"no headless browser: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    # The DevTools network log: every request the page makes, whatever its kind.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(64, 4)
    )
    data = make_shapes(8, size=16, seed=2)
    ids = np.array([f"s{i}" for i in range(7)] + ['<img src="http://127.0.0.1:9/id.png">'])
    config = {
        "methods": {
            "integrated_gradients": {"n_steps": 4, "rule": "trapezoid"},
            "occlusion": {"sliding_window_shapes": [3, 4, 4], "strides": [3, 4, 4]},
        },
        "artifacts": {"sheet_samples": 2},
    }
    report = audit(model, ProbeSet(data.images, data.labels, data.masks, ids), config)
    return write_artifacts(report, tmp_path_factory.mktemp("xai"))


def _inspect(driver, path: Path) -> dict:
    """Open ``path``; return its images' load state, resource entries and every network request."""
    driver.get_log("performance")  # drop what earlier pages logged
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")
    images = driver.execute_script(
        "return Array.from(document.images).map(i => "
        "({src: i.src.slice(0, 40), complete: i.complete, width: i.naturalWidth}))"
    )
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    fetched = [u for u in requests + resources if not u.startswith("data:") and u != path.resolve().as_uri()]
    return {"images": images, "resources": resources, "fetched": fetched}


def test_every_figure_loads_and_nothing_is_fetched(browser, report_folder):
    page = _inspect(browser, report_folder / "report.html")
    assert len(page["images"]) == EXPECTED_IMAGES
    for image in page["images"]:
        assert image["src"].startswith("data:image/png;base64,")
        assert image["complete"] and image["width"] > 0, image
    assert all(name.startswith("data:") for name in page["resources"]), page["resources"]
    assert page["fetched"] == []
    assert "Attribution audit" in browser.title or "audit" in browser.title


def test_the_checks_catch_a_page_that_fetches(browser, report_folder, tmp_path):
    """The same checks on a copy that links an external image and style sheet must see both."""
    html = (report_folder / "report.html").read_text(encoding="utf-8")
    start = html.index('<meta http-equiv="Content-Security-Policy"')
    html = html[:start] + html[html.index(">", start) + 1 :]  # without the page's own policy
    html = html.replace(
        "</body>",
        '<img src="http://127.0.0.1:9/outside.png"><link rel="stylesheet" href="http://127.0.0.1:9/x.css">'
        "</body>",
    )
    copy = tmp_path / "report.html"
    copy.write_text(html, encoding="utf-8")
    page = _inspect(browser, copy)
    assert any("127.0.0.1:9/outside.png" in u for u in page["fetched"])
    assert any(image["width"] == 0 for image in page["images"])
