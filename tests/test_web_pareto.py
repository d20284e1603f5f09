"""The study page of a study with several objectives, in a real browser (headless Chromium,
Playwright's sync API) against a real `tuner serve`: the Pareto plot drawn live, the
leaderboard's objective columns and their sorting, the front in place of a best trial, the
conditional parameters a trial did not get, and parallel coordinates for three objectives.

The trainer is this module, run as `python -m tests.test_web_pareto` (the server's registry is
written to the test's temporary directory): a cheap fake model of some `--width`, trained with
`--optimizer` (and `--momentum`, which only `sgd` takes: a conditional parameter), that writes
three eval steps of `error` and `latency_ms` (the objectives: a wider model is more accurate but
slower) and `memory_mb` (a safety metric: too wide a model does not fit), each with its fake
checkpoint, as `examples/synthetic/task.py` writes them. A trial takes about a second; the page is
opened while they run, so the plot has to keep up with the event stream. What only the tests
need is imported in them, so that a trial starts quickly.

Needs Chromium and Playwright (`scripts/setup.sh` installs both); without them the tests skip.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.server import RunningServer

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
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason=f"playwright is not installed: {HOW}",
    ),
    pytest.mark.skipif(CHROMIUM is None, reason=f"no chromium found: {HOW}"),
]
TOKEN_KEY = "estimator-tuner.token"
STUDY = "web-pareto"
TRIALS = 14
#: The safety threshold of `memory_mb`: a model wider than 80 does not fit.
MEMORY_MB = 320.0
WIDTH = {"parameterName": "width", "type": "INTEGER", "minValue": 1, "maxValue": 100}
OPTIMIZER = {
    "parameterName": "optimizer",
    "type": "CATEGORICAL",
    "categoricalValues": ["adam", "sgd"],
    "conditionalParameterSpecs": [
        {
            "parameterSpec": {
                "parameterName": "momentum",
                "type": "DOUBLE",
                "minValue": 0.0,
                "maxValue": 0.9,
            },
            "parentCategoricalValues": {"values": ["sgd"]},
        }
    ],
}
SPEC: dict[str, Any] = {
    "name": STUDY,
    "trainer": "two_objectives",
    "args": ["--train-steps=30", "--eval-every-steps=10", "--eval-seconds=0.2"],
    "seed": 11,
    "hyperparameters": {
        "metrics": [
            {"metricId": "error", "goal": "MINIMIZE"},
            {"metricId": "latency_ms", "goal": "MINIMIZE"},
            {
                "metricId": "memory_mb",
                "goal": "MINIMIZE",
                "safetyConfig": {"safetyThreshold": MEMORY_MB},
            },
        ],
        "maxTrials": TRIALS,
        "maxParallelTrials": 3,
        "algorithm": "RANDOM_SEARCH",
        "params": [WIDTH, OPTIMIZER],
    },
}
#: Three objectives (memory one of them, no threshold): parallel coordinates.
THREE = "web-pareto-three"
THREE_SPEC: dict[str, Any] = {
    **SPEC,
    "name": THREE,
    "args": ["--train-steps=20", "--eval-every-steps=10"],
    "hyperparameters": {
        **SPEC["hyperparameters"],
        "metrics": [
            {"metricId": "error", "goal": "MINIMIZE"},
            {"metricId": "latency_ms", "goal": "MINIMIZE"},
            {"metricId": "memory_mb", "goal": "MINIMIZE"},
        ],
        "maxTrials": 8,
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from tests.server import start_server

    tmp = tmp_path_factory.mktemp("web-pareto")
    registry = tmp / "trainers.yaml"  # JSON is YAML
    registry.write_text(
        json.dumps({"trainers": {"two_objectives": {"module": __name__, "workingDir": str(REPO)}}})
    )
    running = start_server(
        f"sqlite:///{tmp / 'tuner.db'}",
        tmp,
        slots=3,
        env_overrides={"TUNER_TRAINERS_FILE": str(registry)},
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM is not None
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def study(server: RunningServer) -> str:
    """The two-objective study, submitted when the first test asks for it (its trials run)."""
    return submit(server, SPEC)


def submit(server: RunningServer, spec: dict[str, Any]) -> str:
    from tuner.client.rest import Client

    with Client(server.url, token=server.write_token) as client:
        client.submit(spec)
    return str(spec["name"])


def finish(server: RunningServer, study: str, timeout: float = 180) -> None:
    from tuner.client.rest import Client

    with Client(server.url, token=server.read_token) as client:
        wait_for(lambda: client.study(study).state != "RUNNING", timeout=timeout)
        found = client.study(study)
    assert found.state == "COMPLETED", (found, server.log()[-3000:])


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


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def leaderboard(page: Page) -> list[int]:
    rows = page.get_by_role("table", name="Leaderboard").locator("tbody tr[data-number]")
    return [int(n) for n in rows.evaluate_all("rows => rows.map(r => r.dataset.number)")]


def test_the_pareto_plot_the_objective_columns_and_the_front(browser, server, study):
    from playwright.sync_api import expect

    from tuner.client.rest import Client

    page = open_page(browser, f"{server.url}/#/studies/{study}", server.write_token)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    expect(page.get_by_role("heading", level=1)).to_contain_text(study)
    plot_title = page.get_by_role("heading", name="Pareto plot")
    plot_title.scroll_into_view_if_needed()
    plot = page.locator('svg[data-chart="pareto"]')
    # Drawn from the first COMPLETED trials (while the others run), then kept current from the
    # event stream without a reload.
    expect(plot).to_be_visible(timeout=60_000)
    page.evaluate("window.notReloaded = true")
    finish(server, study)
    with Client(server.url, token=server.read_token) as client:
        front = client.pareto(study)
        by_latency = client.trials(study, sort="objective:latency_ms", limit=50).data
        completed = client.study(study).counts["COMPLETED"]
    members = [m.number for m in front.data]
    assert 1 < front.count < completed, front
    assert front.infeasible_count >= 1, "the seed's draws have a model too wide to fit"

    # Every COMPLETED trial is a point; the front's members are highlighted and joined, the
    # infeasible ones drawn apart.
    wait_for(lambda: plot.get_attribute("data-front") == str(front.count), timeout=20)
    wait_for(lambda: plot.get_attribute("data-points") == str(completed), timeout=20)
    drawn = plot.locator("a.mark.front").evaluate_all("marks => marks.map(m => m.dataset.number)")
    assert sorted(int(n) for n in drawn) == sorted(members)
    assert plot.locator("a.mark.infeasible").count() == front.infeasible_count
    assert plot.locator("a.mark.dominated").count() == (
        completed - front.count - front.infeasible_count
    )
    assert plot.locator("path.staircase").count() == 1
    assert page.evaluate("window.notReloaded") is True

    # The best panel explains the front instead of naming a best trial.
    panel = page.get_by_role("region", name="Pareto front")
    expect(panel).to_contain_text(f"Its Pareto front has {front.count} trials")
    expect(panel).to_contain_text("No one trial is best")
    expect(panel).to_contain_text(f"tuner pull {study} --trial N")
    listed = panel.get_by_role("list", name="Pareto front").locator("li")
    expect(listed).to_have_count(min(front.count, 12))
    assert (
        listed.evaluate_all("items => items.map(i => Number(i.dataset.number))") == (members[:12])
    )
    expect(listed.first).to_contain_text("error")
    expect(listed.first.get_by_role("link")).to_have_attribute(
        "href", f"#/studies/{study}/trials/{members[0]}"
    )
    expect(page.locator("dd", has_text=f"{front.count} trials")).to_be_visible()

    # The leaderboard: a column per objective, a "safe" one, sorted by the second objective.
    page.evaluate("window.scrollTo(0, 0)")
    table = page.get_by_role("table", name="Leaderboard")
    for name in ("error", "latency_ms"):
        expect(table.get_by_role("button", name=name, exact=True)).to_be_visible()
    expect(table.locator("th", has_text="safe")).to_have_count(1)
    infeasible = [r.number for r in by_latency if r.feasible is False]
    expect(table.locator(f'tr[data-number="{infeasible[0]}"] td.unsafe')).to_have_text("no")
    table.get_by_role("button", name="latency_ms", exact=True).click()
    column = table.locator("th", has=page.get_by_role("button", name="latency_ms", exact=True))
    expect(column).to_have_attribute("aria-sort", "ascending")
    wait_for(lambda: leaderboard(page) == [r.number for r in by_latency], timeout=15)
    assert any("sort=objective%3Alatency_ms" in url for url in requested), requested

    # A conditional parameter its parent did not activate is shown as inactive, not missing.
    adam = next(r.number for r in by_latency if r.params["optimizer"] == "adam")
    sgd = next(r.number for r in by_latency if r.params["optimizer"] == "sgd")
    inactive = table.locator(f'tr[data-number="{adam}"] td.inactive')
    expect(inactive).to_have_text("—")
    expect(inactive).to_have_attribute(
        "title", "inactive: its parent's value (optimizer=adam) does not use it"
    )
    expect(table.locator(f'tr[data-number="{sgd}"] td.inactive')).to_have_count(0)

    # Hovering a front member tells its trial; clicking it opens the trial's page.
    plot_title.scroll_into_view_if_needed()
    time.sleep(0.5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "pareto.png", full_page=True)
    page.get_by_label("log scales").check()  # redrawn whole: the same front
    wait_for(lambda: page.locator("svg.pareto a.mark.front").count() == front.count)
    last = members[-1]  # the best on the second objective, at one end of the front
    point = plot.locator(f'a.mark.front[data-number="{last}"]')
    point.hover()
    readout = page.locator('section[aria-labelledby="pareto-title"] .readout')
    expect(readout).to_contain_text(f"Trial #{last}: error ")
    expect(readout).to_contain_text("on the Pareto front")
    point.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Trial #{last}")
    expect(page.locator("dt", has_text="latency_ms (min)")).to_be_visible()
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


def test_a_trial_page_shows_the_parameters_it_did_not_get(browser, server, study):
    from playwright.sync_api import expect

    from tuner.client.rest import Client

    finish(server, study)
    with Client(server.url, token=server.read_token) as client:
        rows = client.trials(study, sort="number", limit=50).data
    adam = next(r.number for r in rows if "momentum" not in r.params)
    page = open_page(browser, f"{server.url}/#/studies/{study}/trials/{adam}", server.read_token)
    params = page.get_by_role("table", name="Params")
    momentum = params.locator("tr", has=page.get_by_role("rowheader", name="momentum"))
    expect(momentum.locator("td")).to_have_text("—")
    expect(momentum.locator("td")).to_have_attribute(
        "title", "inactive: its parent's value (optimizer=adam) does not use it"
    )
    expect(
        params.locator("tr", has=page.get_by_role("rowheader", name="optimizer"))
    ).to_contain_text("adam")
    expect(page.locator("dt", has_text="Safe")).to_be_visible()
    expect(page.get_by_role("button", name="Download checkpoint")).to_be_enabled()
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


def test_three_objectives_in_parallel_coordinates(browser, server):
    from playwright.sync_api import expect

    from tuner.client.rest import Client

    study = submit(server, THREE_SPEC)
    finish(server, study)
    with Client(server.url, token=server.read_token) as client:
        front = client.pareto(study)
        completed = client.study(study).counts["COMPLETED"]
    page = open_page(browser, f"{server.url}/#/studies/{study}", server.read_token)
    page.get_by_role(
        "heading", name="Objectives in parallel coordinates"
    ).scroll_into_view_if_needed()
    plot = page.locator('svg[data-chart="pareto"]')
    expect(plot).to_be_visible()
    wait_for(lambda: plot.get_attribute("data-front") == str(front.count), timeout=20)
    assert plot.locator("a.mark polyline").count() == completed
    drawn = plot.locator("a.mark.front").evaluate_all("marks => marks.map(m => m.dataset.number)")
    assert sorted(int(n) for n in drawn) == sorted(m.number for m in front.data)
    table = page.get_by_role("table", name="Leaderboard")
    for name in ("error", "latency_ms", "memory_mb"):
        expect(table.get_by_role("button", name=name, exact=True)).to_be_visible()
    expect(page.get_by_role("region", name="Pareto front")).to_contain_text("3 objectives")
    # In a narrow window the plot is redrawn to fit: nothing is wider than the window.
    page.set_viewport_size({"width": 380, "height": 900})
    wait_for(lambda: int(plot.get_attribute("width") or 0) <= 380)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


# -- the trainer ------------------------------------------------------------------------------


def train(argv: list[str] | None = None) -> int:
    """Write an eval step of `error`, `latency_ms` and `memory_mb` to `<job-dir>/eval/` every
    `--eval-every-steps`, with its fake checkpoint `<job-dir>/model.ckpt-<step>.*`."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2

    from examples.synthetic.task import EventWriter

    parser = argparse.ArgumentParser(description="a fake model with two objectives")
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], required=True)
    parser.add_argument("--momentum", type=float)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--eval-every-steps", type=int, default=10)
    parser.add_argument("--eval-seconds", type=float, default=0.0, help="sleep before each eval")
    args = parser.parse_args(argv)
    if args.momentum is not None and args.optimizer != "sgd":
        parser.error("--momentum is only for --optimizer=sgd")  # an inactive child was passed
    job_dir = Path(args.job_dir)
    eval_dir = job_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    writer = EventWriter(eval_dir)
    slower = 0.3 if args.optimizer == "sgd" else 0.0
    worse = 0.05 - 0.04 * (args.momentum or 0.0) if args.optimizer == "sgd" else 0.0
    for step in range(args.eval_every_steps, args.train_steps + 1, args.eval_every_steps):
        time.sleep(args.eval_seconds)
        error = 0.1 + 2.0 / args.width + worse + math.exp(-step / 10)
        values = {
            "error": error,
            "latency_ms": 0.5 + 0.1 * args.width + slower,
            "memory_mb": 4.0 * args.width,
        }
        prefix = job_dir / f"model.ckpt-{step}"
        for suffix in (".index", ".data-00000-of-00001", ".meta"):
            Path(f"{prefix}{suffix}").write_text(f"step {step}\n")
        (job_dir / "checkpoint").write_text(f'model_checkpoint_path: "model.ckpt-{step}"\n')
        path = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[str(prefix).encode()])
        summary = summary_pb2.Summary(
            value=[
                *(summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()),
                summary_pb2.Summary.Value(tag="checkpoint_path", tensor=path),
            ]
        )
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        writer.flush()
        print(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in values.items()), flush=True)
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(train())
