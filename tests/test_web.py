"""The browser UI in a real browser (headless Chromium, Playwright's sync API) against a real
`tuner serve` running a real study of the synthetic trainer, with early stopping.

One study runs through the module: its leaderboard fills and its curves grow while the page is
open, a trial is pruned, the page is photographed for docs/screenshots/, a bad spec is refused
in the form with its field path, a read token is offered no write action, and the study is
stopped from the page. A second server checks the page under `--root-path`.

Needs Chromium and Playwright (`scripts/setup.sh` installs both); without them the tests skip.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import RunningServer, start_server
from tuner.client.rest import Client

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the skip below says what to do
    sync_playwright = None

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = (
    os.environ.get("TUNER_TEST_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
    or shutil.which("google-chrome")
)
HOW = (
    "run scripts/setup.sh (installs the dev extra with playwright, and Debian's chromium "
    "with apt-get), or pip install playwright and set TUNER_TEST_CHROMIUM=/path/to/chromium"
)
pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason=f"playwright is not installed: {HOW}"),
    pytest.mark.skipif(CHROMIUM is None, reason=f"no chromium found: {HOW}"),
]
TOKEN_KEY = "estimator-tuner.token"
STUDY = "web-live"
SPEC = {
    "name": STUDY,
    "trainer": "synthetic",
    "args": ["--train-steps=60", "--eval-every-steps=10", "--step-seconds=0.3", "--export"],
    "seed": 5,
    # Pruning from the first COMPLETED trial on, so a bad draw is pruned within seconds.
    "earlyStopping": {"type": "median", "startupTrials": 1},
    "hyperparameters": {
        "goal": "MINIMIZE",
        "hyperparameterMetricTag": "rmse",
        "maxTrials": 200,
        "maxParallelTrials": 2,
        "enableTrialEarlyStopping": True,
        "algorithm": "RANDOM_SEARCH",
        "params": [
            {"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1},
            {
                "parameterName": "y",
                "type": "DOUBLE",
                "minValue": 0.001,
                "maxValue": 1,
                "scaleType": "UNIT_LOG_SCALE",
            },
            {
                "parameterName": "optimizer",
                "type": "CATEGORICAL",
                "categoricalValues": ["adam", "adagrad", "sgd"],
            },
        ],
    },
}
BAD_SPEC = """\
name: bad-one
trainer: synthetic
args: ["--train-steps=10", "--eval-every-steps=10"]
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 2
  params:
    - {parameterName: x, type: DOUBLE, minValue: 1, maxValue: 0}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("web")
    running = start_server(f"sqlite:///{tmp / 'tuner.db'}", tmp, slots=2)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert sync_playwright is not None and CHROMIUM is not None
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def study(server: RunningServer) -> str:
    with Client(server.url, token=server.write_token) as client:
        client.submit(SPEC)
    return STUDY


def open_page(
    browser: Browser, url: str, token: str | None, *, width: int = 1280, height: int = 900
) -> Page:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(30_000)  # a loaded machine (the suite runs beside it)
    if token:
        context.add_init_script(f"localStorage.setItem({TOKEN_KEY!r}, {json.dumps(token)})")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(url)
    return page


def rows(page: Page) -> Any:
    return page.get_by_role("table", name="Leaderboard").locator("tbody tr[data-number]")


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_the_leaderboard_fills_and_curves_grow_live(browser, server, study):
    page = open_page(browser, f"{server.url}/#/studies/{study}", server.write_token)
    expect(page.get_by_role("heading", level=1)).to_contain_text(study)
    expect(page.get_by_role("status")).to_have_text("● live", timeout=10_000)
    page.evaluate("window.notReloaded = true")
    first = rows(page).count()
    curves = page.locator('[data-chart="curves"]')
    wait_for(lambda: int(curves.get_attribute("data-points") or 0) > 0)
    points = int(curves.get_attribute("data-points") or 0)
    # More trials and more eval steps arrive over the stream, without a reload.
    wait_for(lambda: rows(page).count() >= max(first + 2, 4))
    wait_for(lambda: int(curves.get_attribute("data-points") or 0) > points)
    assert page.evaluate("window.notReloaded") is True
    assert page.locator("canvas").count() >= 1  # uPlot drew
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


def test_a_pruned_trial_is_shown_as_pruned_and_the_pages_are_photographed(browser, server, study):
    page = open_page(browser, f"{server.url}/#/studies/{study}", server.write_token)
    pruned = page.locator('table[aria-label="Leaderboard"] tr[data-state="PRUNED"]').first
    expect(pruned).to_be_visible(timeout=40_000)
    expect(pruned.locator(".badge")).to_have_text("PRUNED")
    number = pruned.get_attribute("data-number")
    with Client(server.url, token=server.read_token) as client:
        assert client.trial(study, int(number or 0)).state == "PRUNED"
    curves = page.locator('[data-chart="curves"]')
    wait_for(lambda: "PRUNED" in (curves.get_attribute("data-trials") or ""), timeout=15)

    # Every panel loads when scrolled to; then the whole page is photographed from the top.
    completed = page.locator('table[aria-label="Leaderboard"] tr[data-state="COMPLETED"]')
    wait_for(lambda: completed.count() >= 3)
    for section in (
        "Optimization history",
        "Parameters against the objective",
        "Hyperparameter importances",
        "Analysis",
    ):
        page.get_by_role("heading", name=section).scroll_into_view_if_needed()
    expect(page.get_by_role("list", name="Importances").locator("li").first).to_be_visible(
        timeout=15_000
    )
    page.evaluate("window.scrollTo(0, 0)")
    time.sleep(0.5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "study.png", full_page=True)

    best = page.locator('table[aria-label="Leaderboard"] tbody tr[data-state="COMPLETED"]').first
    best.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Trial #")
    expect(page.locator("dd", has_text="this worker (local)")).to_be_visible()  # where it ran
    expect(page.get_by_role("button", name="Download SavedModel")).to_be_enabled()
    expect(page.get_by_role("log")).to_contain_text("step 60", timeout=10_000)
    with page.expect_download() as saved:
        page.get_by_role("button", name="Download checkpoint").click()
    assert saved.value.suggested_filename.endswith("-checkpoint.tar.gz")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=SCREENSHOTS / "trial.png", full_page=True)
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


def test_a_bad_spec_in_the_form_shows_the_field_path(browser, server):
    page = open_page(browser, f"{server.url}/#/", server.write_token)
    page.get_by_text("New study").click()
    page.get_by_label("Spec (YAML or JSON)").fill(BAD_SPEC)
    page.get_by_role("button", name="Submit study").click()
    error = page.locator("#spec-errors")
    expect(error).to_contain_text("invalid study spec")
    expect(error.locator("code")).to_have_text("hyperparameters.params[0].maxValue")
    expect(page.get_by_label("Spec (YAML or JSON)")).to_have_attribute("aria-invalid", "true")
    # Fixed, it is submitted and the page shows the new study.
    fixed = BAD_SPEC.replace("minValue: 1, maxValue: 0", "minValue: 0, maxValue: 1")
    page.get_by_label("Spec (YAML or JSON)").fill(fixed.replace("maxTrials: 2", "maxTrials: 1"))
    page.get_by_role("button", name="Submit study").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("bad-one")
    page.context.close()


def test_a_read_token_is_offered_no_write_action(browser, server, study):
    page = open_page(browser, f"{server.url}/#/studies/{study}", server.read_token)
    expect(page.locator("#auth")).to_contain_text("read token")
    expect(rows(page).first).to_be_visible()
    for name in ("Stop", "Resume", "Delete…"):
        assert page.get_by_role("button", name=name).count() == 0
    page.goto(f"{server.url}/#/")
    expect(page.get_by_role("link", name=study)).to_be_visible()
    assert page.get_by_text("New study").count() == 0
    page.context.close()


def test_keyboard_sorting_and_a_narrow_window(browser, server, study):
    page = open_page(browser, f"{server.url}/#/studies/{study}", server.write_token, width=380)
    expect(rows(page).first).to_be_visible()
    header = page.get_by_role("button", name="Trial", exact=True)
    header.focus()
    page.keyboard.press("Enter")
    column = page.locator("th", has=header)
    expect(column).to_have_attribute("aria-sort", "ascending")
    expect(rows(page).first).to_have_attribute("data-number", "0")
    page.keyboard.press("Enter")
    expect(column).to_have_attribute("aria-sort", "descending")
    # Nothing but the tables' own scrollers is wider than the window.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.context.close()


def test_stop_from_the_page(browser, server, study):
    page = open_page(browser, f"{server.url}/#/studies/{study}", server.write_token)
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("STOPPED")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    with Client(server.url, token=server.read_token) as client:
        assert client.study(study).state == "STOPPED"
        wait_for(lambda: not client.study(study).counts.get("RUNNING"), timeout=20)
    expect(page.get_by_role("status")).to_have_text("not running", timeout=15_000)
    page.context.close()


def test_the_page_under_a_root_path(browser, tmp_path):
    running = start_server(
        f"sqlite:///{tmp_path / 'tuner.db'}",
        tmp_path,
        slots=0,
        extra_args=("--root-path", "/tuner"),
    )
    try:
        with Client(running.url, token=running.write_token) as client:
            client.submit({**SPEC, "name": "behind-a-proxy"})
        page = open_page(browser, f"{running.url}/tuner/", running.read_token)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.reload()
        page.get_by_role("link", name="behind-a-proxy").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("behind-a-proxy")
        expect(page.get_by_role("table", name="Leaderboard")).to_contain_text("No trial yet")
        expect(page.get_by_role("status")).to_have_text("● live")
        paths = [httpx.URL(url).path for url in requested]
        assert paths and all(p.startswith("/tuner/") for p in paths), paths
        assert any(p.startswith("/tuner/api/v1/") for p in paths)
        assert any(p.startswith("/tuner/ui/") for p in paths)
        page.context.close()
    finally:
        running.stop()
