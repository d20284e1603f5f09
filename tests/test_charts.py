"""The study page's chart data (`GET /studies/{study}/charts/{chart}`) on a 10,000-trial study.

The study is built as bench/leaderboard.py builds its own (the rows the real code paths leave
for a COMPLETED trial, written in bulk) on SQLite and on PostgreSQL, and asked through a real
`tuner serve` on a loopback port. Every chart's answer stays bounded (points, bytes), its points
are the study's own trials with their own params and objectives, the best trial is always in
it, and the leaderboard's filter selects the same trials for the charts as for the list.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench.leaderboard import STUDY, SyntheticTrial, build_study, synthesize
from tests.conftest import new_database
from tests.server import RunningServer, start_server
from tuner.persistence.chart_data import EDF_POINTS, MAX_POINTS, quantiles, spread

TRIALS = 10_000
#: A chart's body at the largest `limit`: about 250 bytes a point, with room to spare.
MAX_BYTES = 1_000_000


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def big(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, dict[int, SyntheticTrial]]]:
    tmp = tmp_path_factory.mktemp(f"charts-{request.param}")
    trials = synthesize(TRIALS, 2, seed=7)
    with new_database(request.param, tmp) as url:
        build_study(url, trials, artifact_root=tmp / "artifacts", batch=2000, chunk=500)
        server = start_server(url, tmp, slots=0)
        try:
            yield server, {t.number: t for t in trials}
        finally:
            server.stop()


def chart(server: RunningServer, kind: str, **params: Any) -> tuple[dict[str, Any], int]:
    response = httpx.get(
        f"{server.url}/api/v1/studies/{STUDY}/charts/{kind}",
        params=params,
        headers={"Authorization": f"Bearer {server.read_token}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json(), len(response.content)


def assert_real(points: list[dict[str, Any]], trials: dict[int, SyntheticTrial]) -> None:
    """Each point is a trial of the study, with that trial's params and objective."""
    assert len({p["number"] for p in points}) == len(points)
    for point in points:
        trial = trials[point["number"]]
        assert point["state"] == "COMPLETED"
        assert point["params"]["optimizer"] == trial.params["optimizer"]
        assert point["params"]["hidden_units"] == trial.params["hidden_units"]
        assert point["objective"] == pytest.approx(trial.objective)


@pytest.mark.parametrize("kind", ["parallel", "slice", "rank", "contour", "timeline"])
def test_every_chart_stays_bounded_at_10000_trials_and_keeps_the_best(big, kind):
    server, trials = big
    best = min(trials.values(), key=lambda t: (t.objective, t.number))
    body, size = chart(server, kind, limit=MAX_POINTS)
    assert (body["matched"], body["eligible"]) == (TRIALS, TRIALS)
    assert body["sampled"] == len(body["points"]) == MAX_POINTS
    assert size < MAX_BYTES
    assert_real(body["points"], trials)
    numbers = [p["number"] for p in body["points"]]
    if kind == "timeline":
        assert numbers == sorted(numbers) and numbers[0] == 0 and numbers[-1] == TRIALS - 1
        assert all(p["rank"] is None for p in body["points"])
    else:
        # Best first, the best trial first of all, and the sample reaching the worst.
        assert numbers[0] == best.number and body["points"][0]["rank"] == 0
        assert body["points"][-1]["rank"] == 1
        objectives = [p["objective"] for p in body["points"]]
        assert objectives == sorted(objectives)
    # The default is a quarter of that, and a request cannot ask for more.
    assert chart(server, kind)[0]["sampled"] == 500
    too_many = httpx.get(
        f"{server.url}/api/v1/studies/{STUDY}/charts/{kind}",
        params={"limit": MAX_POINTS + 1},
        headers={"Authorization": f"Bearer {server.read_token}"},
    )
    assert too_many.status_code == 422
    assert "limit" in too_many.text


def test_the_edf_is_quantiles_of_every_objective(big):
    server, trials = big
    body, size = chart(server, "edf")
    assert body["eligible"] == TRIALS and body["points"] == [] and size < 20_000
    edf = body["edf"]
    assert len(edf) <= EDF_POINTS
    values = sorted(t.objective for t in trials.values())
    assert edf[0]["value"] == pytest.approx(values[0])
    assert edf[-1] == {"value": pytest.approx(values[-1]), "share": 1.0}
    for point in edf:  # each share is the true share of trials at or below its value
        at_or_below = sum(v <= point["value"] for v in values)
        assert point["share"] == pytest.approx(at_or_below / TRIALS)


def test_the_filter_selects_the_same_trials_as_the_leaderboard(big):
    server, trials = big
    filters = ["param:optimizer=adam", "param:hidden_units>=100"]
    adam = [
        t
        for t in trials.values()
        if t.params["optimizer"] == "adam" and t.params["hidden_units"] >= 100
    ]
    listed = httpx.get(
        f"{server.url}/api/v1/studies/{STUDY}/trials",
        params={"filter": filters, "limit": 1},
        headers={"Authorization": f"Bearer {server.read_token}"},
    ).json()
    body, _ = chart(server, "parallel", filter=filters, limit=50, pick="best")
    assert body["matched"] == body["eligible"] == listed["count"] == len(adam)
    best = sorted(adam, key=lambda t: (t.objective, t.number))[:50]
    assert [p["number"] for p in body["points"]] == [t.number for t in best]
    assert_real(body["points"], trials)
    # No trial passes: an empty chart that says so, not an error.
    empty, _ = chart(server, "contour", filter="objective<0")
    assert (empty["matched"], empty["eligible"], empty["points"]) == (0, 0, [])
    # A bad filter names the parameter and what is wrong.
    bad = httpx.get(
        f"{server.url}/api/v1/studies/{STUDY}/charts/slice",
        params={"filter": "param:nope=1"},
        headers={"Authorization": f"Bearer {server.read_token}"},
    )
    assert bad.status_code == 422
    assert "nope" in bad.text and "filter" in bad.text


def test_a_spread_sample_is_deterministic_and_distinct():
    assert spread(5, 10, best=2) == [0, 1, 2, 3, 4]
    picked = spread(10_000, 100, best=10)
    assert picked[:10] == list(range(10)) and picked[-1] == 9_999
    assert len(set(picked)) == 100 and picked == sorted(picked)
    assert spread(10_000, 100, best=10) == picked
    assert spread(3, 0, best=0) == []


def test_quantiles_count_ties_at_their_last_place():
    assert quantiles([1.0, 2.0, 2.0, 3.0]) == [(1.0, 0.25), (2.0, 0.75), (3.0, 1.0)]
    assert quantiles([]) == []
    many = quantiles([float(i) for i in range(1000)])
    assert len(many) == EDF_POINTS and many[0] == (0.0, 0.001) and many[-1] == (999.0, 1.0)
