"""The study page's analysis in a real browser (headless Chromium through Playwright) against a
real `tuner serve` running real studies of the synthetic trainer.

Each plot (contour, slice, EDF, rank, timeline, parallel coordinates) draws the study's trials;
the leaderboard's filter drives every chart (a filtered-out trial leaves them all), the
importances (computed over the trials it keeps) and, on a study with two objectives, the Pareto
front and plot (a filtered-out trial leaves both); brushing a
parallel-coordinates axis filters the leaderboard; notes are edited and rendered as markdown with
HTML shown as text; Stop ends a running trial; the CSV button saves the filtered rows; a long
failure reason opens to its last line.

Needs Chromium and Playwright (`scripts/setup.sh` installs both); without them the tests skip.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server import RunningServer, start_server
from tests.test_web import CHROMIUM, HOW, open_page, rows, wait_for
from tuner.client.rest import Client

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the skip below says what to do
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason=f"playwright is not installed: {HOW}"),
    pytest.mark.skipif(CHROMIUM is None, reason=f"no chromium found: {HOW}"),
]
STUDY = "web-analysis"
TRIALS = 12
PARAMS = [
    {"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1},
    {
        "parameterName": "y",
        "type": "DOUBLE",
        "minValue": 0.001,
        "maxValue": 1,
        "scaleType": "UNIT_LOG_SCALE",
    },
    {"parameterName": "optimizer", "type": "CATEGORICAL", "categoricalValues": ["adam", "sgd"]},
]


def spec(name: str, args: list[str], max_trials: int, parallel: int) -> dict[str, Any]:
    return {
        "name": name,
        "trainer": "synthetic",
        "args": args,
        "seed": 11,
        "hyperparameters": {
            "goal": "MINIMIZE",
            "hyperparameterMetricTag": "rmse",
            "maxTrials": max_trials,
            "maxParallelTrials": parallel,
            "maxFailedTrials": max_trials,
            "algorithm": "RANDOM_SEARCH",
            "params": PARAMS,
        },
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("web-analysis")
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
def study(server: RunningServer) -> dict[int, dict[str, Any]]:
    """A finished study of 12 quick trials; its trials by number, as the API lists them."""
    args = ["--train-steps=20", "--eval-every-steps=10"]
    with Client(server.url, token=server.write_token) as client:
        client.submit(spec(STUDY, args, TRIALS, 2))
        wait_for(lambda: client.study(STUDY).state == "COMPLETED", timeout=120)
    found = api(server, f"/studies/{STUDY}/trials", limit=100)["data"]
    assert len(found) == TRIALS
    assert {"adam", "sgd"} <= {t["params"]["optimizer"] for t in found}
    return {t["number"]: t for t in found}


def api(server: RunningServer, path: str, **params: Any) -> Any:
    response = httpx.get(
        f"{server.url}/api/v1{path}",
        params=params,
        headers={"Authorization": f"Bearer {server.read_token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def numbers_of(page: Page, selector: str) -> set[int]:
    text = page.locator(selector).get_attribute("data-trials") or ""
    return {int(n) for n in text.split()}


def open_study(browser: Browser, server: RunningServer, token: str | None = None) -> Page:
    page = open_page(browser, f"{server.url}/#/studies/{STUDY}", token or server.write_token)
    expect(rows(page).first).to_be_visible()
    return page


def show_plot(page: Page, plot: str) -> None:
    page.get_by_role("heading", name="Analysis", exact=True).scroll_into_view_if_needed()
    page.get_by_label("Plot").select_option(plot)
    expect(page.locator(f'.chart-holder.analysis[data-chart="{plot}"]')).to_be_attached()


def apply_filter(page: Page, text: str) -> None:
    page.get_by_label("Filter").fill(text)
    page.get_by_role("button", name="Apply").click()


def plot_numbers(page: Page, plot: str, expected: set[int]) -> None:
    """Show `plot` and wait until it has drawn exactly the trials `expected`."""
    show_plot(page, plot)
    holder = ".chart-holder.analysis"
    wait_for(
        lambda: (
            page.locator(holder).get_attribute("data-chart") == plot
            and numbers_of(page, holder) == expected
        )
    )
    marks = {
        int(n or -1)
        for n in page.locator(f"{holder} [data-number]").evaluate_all(
            "els => els.map((el) => el.dataset.number)"
        )
    }
    assert marks == expected, plot


def test_every_plot_draws_the_trials_and_follows_the_filter(browser, server, study):
    completed = {n for n, t in study.items() if t["state"] == "COMPLETED"}
    adam_all = {n for n, t in study.items() if t["params"]["optimizer"] == "adam"}
    adam = adam_all & completed
    sgd = set(study) - adam_all
    assert adam and sgd
    page = open_study(browser, server)
    for plot in ("contour", "slice", "rank"):
        plot_numbers(page, plot, completed)
    plot_numbers(page, "timeline", set(study))
    holder = ".chart-holder.analysis"
    show_plot(page, "edf")
    expect(page.locator(f"{holder} path.edf")).to_be_visible()
    expect(page.locator(holder)).to_have_attribute("data-eligible", str(len(completed)))
    page.get_by_role(
        "heading", name="Parameters against the objective"
    ).scroll_into_view_if_needed()
    wait_for(lambda: numbers_of(page, '[data-chart="parallel"]') == completed)
    curves = '[data-chart="curves"]'
    page.get_by_role("heading", name="Eval curves").scroll_into_view_if_needed()
    wait_for(lambda: curve_numbers(page) & sgd)
    # The leaderboard's filter: every chart now shows the adam trials only.
    apply_filter(page, "param:optimizer=adam")
    wait_for(lambda: rows(page).count() == len(adam_all))
    expect(page.locator(holder)).to_have_attribute("data-eligible", str(len(adam)))  # the EDF
    for plot in ("contour", "slice", "rank"):
        plot_numbers(page, plot, adam)
    plot_numbers(page, "timeline", adam_all)
    wait_for(lambda: numbers_of(page, '[data-chart="parallel"]') == adam)
    wait_for(lambda: curve_numbers(page) and curve_numbers(page) <= adam_all)
    assert page.locator(curves).get_attribute("data-trials")
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


def board_numbers(page: Page) -> set[int]:
    """The trial numbers on the leaderboard's page, read at once (it is redrawn live)."""
    found = rows(page).evaluate_all("els => els.map((el) => Number(el.dataset.number))")
    return set(found)


def curve_numbers(page: Page) -> set[int]:
    text = page.locator('[data-chart="curves"]').get_attribute("data-trials") or ""
    return {int(item.split(":")[0]) for item in text.split()}


def test_brushing_a_parallel_axis_filters_the_leaderboard(browser, server, study):
    page = open_study(browser, server)
    page.get_by_role(
        "heading", name="Parameters against the objective"
    ).scroll_into_view_if_needed()
    chart = page.locator('[data-chart="parallel"]')
    wait_for(lambda: chart.get_attribute("data-trials"))
    plot = chart.locator("svg")
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    assert box is not None
    # Hover: the pointer on a trial's line names it.
    line = chart.locator("polyline[data-number]").first
    number = line.get_attribute("data-number")
    assert number is not None
    first = (line.get_attribute("points") or "").split()[0].split(",")
    page.mouse.move(box["x"] + float(first[0]) + 3, box["y"] + float(first[1]))
    expect(page.locator('[data-readout="parallel"]')).to_contain_text(f"#{number}:")
    # Brush the x axis over its upper half: x from 0 to 1.
    axis = chart.locator('g.axis[data-subject="param:x"]')
    ax = float(axis.get_attribute("data-x") or 0)
    top, bottom = 34, 320 - 26
    page.mouse.move(box["x"] + ax, box["y"] + top)
    page.mouse.down()
    page.mouse.move(box["x"] + ax, box["y"] + (top + bottom) / 2, steps=5)
    page.mouse.up()
    filter_box = page.get_by_label("Filter")
    expect(filter_box).to_have_value("param:x>=0, param:x<=1")
    expected = {n for n, t in study.items() if t["params"]["x"] >= 0}
    wait_for(lambda: board_numbers(page) == expected)
    completed = {n for n in expected if study[n]["state"] == "COMPLETED"}
    wait_for(lambda: numbers_of(page, '[data-chart="parallel"]') == completed)
    expect(chart.locator("rect.brush").first).to_be_visible()
    # A click on the axis clears its brush, and the filter with it.
    page.mouse.click(box["x"] + ax, box["y"] + (top + bottom) / 2)
    expect(filter_box).to_have_value("")
    wait_for(lambda: rows(page).count() == len(study))
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


def test_notes_are_edited_and_rendered_without_running_html(browser, server, study):
    text = (
        "Tried **wider** layers.\n\n<script>window.injected = 1</script>\n\n"
        "[bad](javascript:alert(1))"
    )
    page = open_study(browser, server)
    notes = page.get_by_role("region", name="Notes")
    notes.get_by_role("button", name="Add a note").click()
    notes.get_by_label("Note (markdown)").fill(text)
    notes.get_by_role("button", name="Save note").click()
    body = notes.locator(".note-body")
    expect(body.locator("strong")).to_have_text("wider")
    expect(body).to_contain_text("<script>window.injected = 1</script>")  # shown as text
    assert page.evaluate("window.injected") is None
    assert body.locator("script").count() == 0
    assert body.locator('a[href^="javascript"]').count() == 0
    assert api(server, f"/studies/{STUDY}")["note"] == text
    # It stays, and a read token sees it without an Edit button.
    page.context.close()
    page = open_study(browser, server, server.read_token)
    notes = page.get_by_role("region", name="Notes")
    expect(notes.locator(".note-body strong")).to_have_text("wider")
    assert notes.get_by_role("button").count() == 0
    page.context.close()
    # A trial's note, on the trial page.
    number = min(study)
    page = open_page(browser, f"{server.url}/#/studies/{STUDY}/trials/{number}", server.write_token)
    notes = page.get_by_role("region", name="Notes")
    notes.get_by_role("button", name="Add a note").click()
    notes.get_by_label("Note (markdown)").fill("- a *list* item")
    notes.get_by_role("button", name="Save note").click()
    expect(notes.locator(".note-body li em")).to_have_text("list")
    assert api(server, f"/studies/{STUDY}/trials/{number}")["note"] == "- a *list* item"
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


def test_the_csv_button_saves_the_filtered_rows(browser, server, study):
    page = open_study(browser, server)
    apply_filter(page, "param:optimizer=sgd")
    sgd = {n for n, t in study.items() if t["params"]["optimizer"] == "sgd"}
    wait_for(lambda: rows(page).count() == len(sgd))
    with page.expect_download() as saved:
        page.get_by_role("button", name="Download CSV").click()
    path = saved.value.path()
    table = list(csv.DictReader(io.StringIO(path.read_text())))
    assert {int(r["number"]) for r in table} == sgd
    assert all(r["param:optimizer"] == "sgd" for r in table)
    assert {"param:x", "param:y", "objective"} <= set(table[0])
    page.context.close()


def test_a_long_failure_reason_opens_to_its_last_line(browser, server, study):
    name = "web-crash"
    with Client(server.url, token=server.write_token) as client:
        client.submit(
            spec(name, ["--train-steps=20", "--eval-every-steps=10", "--crash-at-step=10"], 1, 1)
        )
        wait_for(lambda: client.study(name).counts.get("FAILED"), timeout=60)
    reason = api(server, f"/studies/{name}/trials/0")["failureReason"]
    last = reason.strip().splitlines()[-1]
    assert "simulated crash" in last and len(reason.splitlines()) > 2
    page = open_page(browser, f"{server.url}/#/studies/{name}", server.write_token)
    row = page.locator('table[aria-label="Leaderboard"] tr[data-state="FAILED"]')
    expect(row).to_be_visible()
    whole = row.locator("pre.reason-full")
    expect(whole).to_be_hidden()
    row.locator("summary").click()
    expect(whole).to_be_visible()
    expect(whole).to_contain_text(last)
    line = whole.get_by_text(last)
    expect(line).to_be_in_viewport()
    page.context.close()


def test_stop_ends_a_running_trial(browser, server, study):
    name = "web-stop"
    slow = ["--train-steps=1000", "--eval-every-steps=10", "--step-seconds=0.5"]
    with Client(server.url, token=server.write_token) as client:
        client.submit(spec(name, slow, 3, 1))
        wait_for(lambda: client.study(name).counts.get("RUNNING"), timeout=60)
    page = open_page(browser, f"{server.url}/#/studies/{name}", server.write_token)
    running = page.locator('table[aria-label="Leaderboard"] tr[data-state="RUNNING"]').first
    expect(running).to_be_visible()
    number = int(running.get_attribute("data-number") or -1)
    page.get_by_role("button", name=f"Stop trial #{number}").click()
    page.get_by_role("dialog").get_by_role("button", name="Stop trial").click()
    ended = page.locator(
        f'table[aria-label="Leaderboard"] tr[data-number="{number}"][data-state="PRUNED"]'
    )
    expect(ended).to_be_visible(timeout=30_000)
    detail = api(server, f"/studies/{name}/trials/{number}")
    assert detail["state"] == "PRUNED"
    assert "by hand" in (detail["failureReason"] or "")
    # Not run again: the next trial has the next number.
    with Client(server.url, token=server.write_token) as client:
        client.stop(name)
    time.sleep(0.5)
    page.context.close()


def importance_count(page: Page) -> int | None:
    found = page.locator('section[aria-labelledby="importance-title"]').get_attribute("data-trials")
    return int(found) if found else None


def test_the_importances_follow_the_filter(browser, server, study):
    completed = {n for n, t in study.items() if t["state"] == "COMPLETED"}
    adam = {n for n in completed if study[n]["params"]["optimizer"] == "adam"}
    assert 2 <= len(adam) < len(completed)
    page = open_study(browser, server)
    panel = page.locator('section[aria-labelledby="importance-title"]')
    page.get_by_role("heading", name="Hyperparameter importances").scroll_into_view_if_needed()
    wait_for(lambda: importance_count(page) == len(completed))
    expect(panel).to_contain_text(f"over {len(completed)} COMPLETED trials;")
    apply_filter(page, "param:optimizer=adam")
    wait_for(lambda: importance_count(page) == len(adam))
    expect(panel).to_contain_text(
        f"over {len(adam)} COMPLETED trials the leaderboard's state and filter keep"
    )
    expect(panel.get_by_role("list", name="Importances").locator("li")).to_have_count(3)
    # A filter that keeps one COMPLETED trial: the server's "not enough trials", with the count.
    one = min(completed)
    apply_filter(page, f"param:x={study[one]['params']['x']!r}")
    expect(panel).to_contain_text("has 1 COMPLETED trial(s) with an objective among the 1")
    assert importance_count(page) is None
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


PAIR = "web-analysis-pair"


def front_numbers(page: Page) -> list[int]:
    listed = page.get_by_role("list", name="Pareto front").locator("li")
    return sorted(listed.evaluate_all("items => items.map(i => Number(i.dataset.number))"))


def plotted(page: Page) -> list[int]:
    marks = page.locator('svg[data-chart="pareto"] a.mark')
    return sorted(marks.evaluate_all("marks => marks.map(m => Number(m.dataset.number))"))


def test_the_pareto_front_and_plot_follow_the_filter(browser, server, study):
    # rmse down and loss (rmse²) up: every COMPLETED trial is on the front.
    two = spec(PAIR, ["--train-steps=20", "--eval-every-steps=10"], 8, 2)
    hyper = two["hyperparameters"]
    del hyper["goal"], hyper["hyperparameterMetricTag"]
    hyper["metrics"] = [
        {"metricId": "rmse", "goal": "MINIMIZE"},
        {"metricId": "loss", "goal": "MAXIMIZE"},
    ]
    with Client(server.url, token=server.write_token) as client:
        client.submit(two)
        wait_for(lambda: client.study(PAIR).state == "COMPLETED", timeout=120)
    trials = api(server, f"/studies/{PAIR}/trials", limit=100)["data"]
    completed = sorted(t["number"] for t in trials if t["state"] == "COMPLETED")
    sgd = sorted(n for n in completed if trials_by(trials)[n]["params"]["optimizer"] == "sgd")
    adam = sorted(set(completed) - set(sgd))
    assert adam and sgd
    page = open_page(browser, f"{server.url}/#/studies/{PAIR}", server.write_token)
    expect(rows(page).first).to_be_visible()
    page.get_by_role("heading", name="Pareto plot").scroll_into_view_if_needed()
    wait_for(lambda: plotted(page) == completed and front_numbers(page) == completed)
    apply_filter(page, "param:optimizer=adam")
    wait_for(lambda: plotted(page) == adam and front_numbers(page) == adam)
    summary = page.get_by_role("region", name="Pareto front")
    expect(summary).to_contain_text("the leaderboard's state and filter keep")
    assert not set(sgd) & set(plotted(page)) and not set(sgd) & set(front_numbers(page))
    # Cleared: every COMPLETED trial again.
    apply_filter(page, "")
    wait_for(lambda: plotted(page) == completed and front_numbers(page) == completed)
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


def trials_by(trials: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {t["number"]: t for t in trials}
