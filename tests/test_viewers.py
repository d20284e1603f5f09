"""The viewers users open on a study, run for real against what a real study wrote.

- optuna-dashboard: the real server (a subprocess on a loopback port) on the study's SQLite
  database; its JSON API must show our user attrs, states and the objective's name, and what
  a user can do there (delete a study, tell a running trial) must end the trial cleanly.
- TensorBoard: the HParams summaries read back by TensorBoard's hparams plugin (its own HTTP
  handlers) through each of its two loaders, the Python event multiplexer and the Rust data
  server, in a subprocess on TensorBoard's TensorFlow-free path.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import api_pb2, metadata

from tuner.domain.config import Settings
from tuner.domain.entities import JournalEntry
from tuner.domain.spec import StudySpec, parse_spec
from tuner.domain.trainers import TrainerRegistry
from tuner.engine.manager import StudyManager
from tuner.outputs import hparams
from tuner.outputs.events import EventFileReader
from tuner.outputs.layout import find_model_dirs
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops
from tuner.study import optuna_attrs
from tuner.study.operations import Backend
from tuner.study.sampling import format_flag_value

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")


def make_spec(name: str, *, args: list[str], max_trials: int, **hp: Any) -> StudySpec:
    hyper: dict[str, Any] = {
        "goal": "MINIMIZE",
        "hyperparameterMetricTag": "rmse",
        "maxTrials": max_trials,
        "params": [
            {"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1},
            # Sampled in an internal space: the Optuna param is not what the trainer gets.
            {
                "parameterName": "y",
                "type": "DOUBLE",
                "minValue": 0.001,
                "maxValue": 0.1,
                "scaleType": "UNIT_REVERSE_LOG_SCALE",
            },
            {"parameterName": "layers", "type": "INTEGER", "minValue": 1, "maxValue": 4},
            {
                "parameterName": "optimizer",
                "type": "CATEGORICAL",
                "categoricalValues": ["adam", "sgd", "with space"],
            },
        ],
    }
    hyper.update(hp)
    spec = {"name": name, "trainer": "synthetic", "seed": 3, "args": args, "hyperparameters": hyper}
    return parse_spec(spec)


@dataclass
class World:
    """One database and artifact root for the module, with optuna-dashboard serving it."""

    settings: Settings
    backend: Backend
    registry: TrainerRegistry
    dashboard: str

    def run(
        self,
        spec: StudySpec,
        *,
        listener: Callable[[JournalEntry], None] | None = None,
        deadline: float = 30.0,
    ) -> None:
        study_ops.submit_study(self.backend, spec, self.registry)
        manager = StudyManager(
            self.backend,
            self.registry,
            self.settings,
            slots=1,
            studies=[spec.name],
        )
        stop_listening = self.backend.db.listen(listener) if listener else lambda: None
        started = time.monotonic()
        try:
            manager.run(should_stop=lambda: time.monotonic() - started > deadline)
        finally:
            stop_listening()
        assert time.monotonic() - started < deadline, "the manager did not end the study"

    def runs(self, name: str) -> tuple[Any, list[Any]]:
        with self.backend.db.session() as s:
            study = repo.get_study(s, name)
            return study, repo.runs(s, study.id)

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.dashboard}{path}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def dashboard_study(self, name: str) -> dict[str, Any]:
        listed = self.get("/api/studies")["study_summaries"]
        (summary,) = [s for s in listed if s["study_name"] == name]
        detail: dict[str, Any] = self.get(f"/api/studies/{summary['study_id']}")
        return detail


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("viewers")
    url = f"sqlite:///{base / 'tuner.db'}"
    settings = Settings(
        database_url=url,
        artifact_root=base / "artifacts",
        trainers_file=REPO / "trainers.yaml",
        poll_interval=0.05,
        stop_grace_seconds=3.0,
    )
    backend = Backend.connect(url)  # creates the schema before the dashboard opens it
    port = _free_port()
    log = open(base / "dashboard.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(DASHBOARD), url, "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (base / "dashboard.log").read_text()
            try:
                if httpx.get(f"{address}/api/meta", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "optuna-dashboard did not start"
            time.sleep(0.2)
        registry = TrainerRegistry.from_file(REPO / "trainers.yaml", missing_ok=False)
        yield World(settings, backend, registry, address)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        backend.close()


@pytest.fixture(scope="module")
def viewed(world: World) -> StudySpec:
    """A study of 2 COMPLETED trials and a third STOPPED while it ran (its params wait)."""
    spec = make_spec(
        "viewed",
        args=["--train-steps=60", "--eval-every-steps=20", "--step-seconds=0.2"],
        max_trials=3,
    )

    def stop_third(event: JournalEntry) -> None:
        if event.kind == "created" and event.number == 2:
            study_ops.request_stop(world.backend, "viewed")

    world.run(spec, listener=stop_third)
    return spec


def _attrs(trial: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in trial["user_attrs"]}


def test_dashboard_shows_our_attrs_states_and_metric_name(world: World, viewed: StudySpec):
    _, runs = world.runs("viewed")
    assert [r.state for r in runs] == ["COMPLETED", "COMPLETED", "STOPPED"]
    detail = world.dashboard_study("viewed")
    assert detail["objective_names"] == ["rmse"]
    trials = {t["number"]: t for t in detail["trials"]}
    # The stopped trial's params wait as a new trial (Optuna has no STOPPED: it shows Fail).
    assert [trials[n]["state"] for n in sorted(trials)] == [
        "Complete",
        "Complete",
        "Fail",
        "Waiting",
    ]
    root = world.settings.artifact_root.resolve()
    for run in runs:
        attrs = _attrs(trials[run.number])
        assert attrs[optuna_attrs.TRIAL_DIR] == run.output_dir == f"viewed/trial-{run.number:04d}"
        assert attrs[optuna_attrs.TRIAL_DIR_ABS] == str(root / run.output_dir)
        assert attrs[optuna_attrs.LOG_PATH] == run.log_path
        assert attrs[optuna_attrs.LOG_PATH_ABS] == str(root / run.log_path)
        assert attrs[optuna_attrs.STATE] == run.state
        # What the trainer got on its command line, as the flag's text.
        for name, value in run.params.items():
            assert attrs[optuna_attrs.arg_key(name)] == format_flag_value(value)
        params = {p["name"]: p["param_external_value"] for p in trials[run.number]["params"]}
        assert params["y"] != attrs["--y"]  # sampled in the internal space
        assert float(params["y"]) == pytest.approx(0.001 + 0.1 - float(attrs["--y"]))
    first, _, stopped = runs
    first_attrs = _attrs(trials[first.number])
    assert first_attrs[optuna_attrs.EXIT_CODE] == "0"
    assert first_attrs[optuna_attrs.BEST_STEP] == "60"  # a decreasing curve
    assert optuna_attrs.REASON not in first_attrs
    stopped_attrs = _attrs(trials[stopped.number])
    assert stopped_attrs[optuna_attrs.STATE] == "STOPPED"
    assert stopped_attrs[optuna_attrs.REASON] == stopped.failure_reason
    assert "study stopped" in stopped_attrs[optuna_attrs.REASON]
    waiting = _attrs(trials[3])
    assert waiting == {"retry_of": str(stopped.number)}


# Reads a logdir as TensorBoard does, through both of its loaders: the Python event
# multiplexer, and the Rust data server that `tensorboard` uses by default (`--load_fast`),
# and asks the hparams plugin's own HTTP handlers what its table shows. The two differ: the
# data server drops float64 scalars, which the multiplexer reads. A `tensorboard.compat.notf`
# module makes TensorBoard use its TensorFlow stub (as its TensorFlow-free build does).
TENSORBOARD_READ = """
import json, sys, time, types
sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.data import server_ingester
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import hparams_plugin
from tensorboard.util import grpc_util
from werkzeug import test, wrappers

logdir, sessions = sys.argv[1], int(sys.argv[2])
statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]

def table(provider):
    context = base_plugin.TBContext(logdir=logdir, data_provider=provider)
    apps = hparams_plugin.HParamsPlugin(context).get_plugin_apps()

    def post(route, body):
        client = test.Client(apps[route], wrappers.Response)
        response = client.post(route, data=json.dumps(body), content_type="application/json")
        assert response.status_code == 200, response.get_data(as_text=True)
        return json.loads(response.get_data(as_text=True))

    return {
        "runs": sorted(
            r.run_name for r in provider.list_runs(tb_context.RequestContext(), experiment_id="")
        ),
        "experiment": post("/experiment", {"experimentName": "", "includeMetrics": True}),
        "groups": post("/session_groups", {
            "experimentName": "", "allowedStatuses": statuses, "colParams": [],
            "startIndex": 0, "sliceSize": 100, "includeMetrics": True,
        }),
    }

def ended(result):
    groups = result["groups"]["sessionGroups"]
    done = [s for g in groups for s in g["sessions"] if s["status"] != "STATUS_UNKNOWN"]
    return len(done) == sessions

multiplexer = plugin_event_multiplexer.EventMultiplexer()
multiplexer.AddRunsFromDirectory(logdir)
multiplexer.Reload()
out = {"multiplexer": table(data_provider.MultiplexerDataProvider(multiplexer, logdir))}

server = server_ingester.SubprocessServerDataIngester(
    server_ingester.get_server_binary(),
    logdir,
    reload_interval=1,
    channel_creds_type=grpc_util.ChannelCredsType.LOCAL,
)
server.start()  # the server ends when this process does (it watches its stdin)
deadline = time.monotonic() + 20
while True:  # it loads in the background
    out["data_server"] = table(server.data_provider)
    if ended(out["data_server"]) or time.monotonic() > deadline:
        break
    time.sleep(0.2)
out["tensorflow"] = "tensorflow" in sys.modules
print(json.dumps(out))
"""


def pretty_print(value: Any) -> str:
    """A value as TensorBoard's HParams dashboard prints it (its `prettyPrint`: a number with
    `toPrecision(5)`, 5 significant digits kept, anything else as its text)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:#.5g}"
    return str(value)


def time_series_session(run: str, sessions: list[str]) -> str | None:
    """The session whose hparams TensorBoard's Time Series run table gives a run: the longest
    session name that the run's name starts with (as its front end matches them in 2.15)."""
    for name in sorted(sessions, key=len, reverse=True):
        if run.startswith(name):
            return name
    return None


def read_with_tensorboard(logdir: Path, sessions: int) -> dict[str, Any]:
    """What each of TensorBoard's loaders makes of `logdir`, which holds `sessions` sessions."""
    done = subprocess.run(
        [sys.executable, "-c", TENSORBOARD_READ, str(logdir), str(sessions)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert not result.pop("tensorflow")
    return result


@pytest.fixture(scope="module")
def tensorboard_tables(world: World, viewed: StudySpec) -> dict[str, Any]:
    _, runs = world.runs("viewed")
    return read_with_tensorboard(world.settings.artifact_root / "viewed", len(runs))


@pytest.mark.parametrize("loader", ["multiplexer", "data_server"])
def test_tensorboard_hparams_show_each_trial_its_status_and_objective(
    world: World, tensorboard_tables: dict[str, Any], loader: str
):
    _, runs = world.runs("viewed")
    seen = tensorboard_tables[loader]
    trial_runs = [f"trial-{r.number:04d}" for r in runs]
    # One run per trial, its session's, and the runs the trainer wrote below it (the stopped
    # trial's eval dir, if it got that far); the study's experiment is the tuner's one run.
    evals = {f"trial-{r.number:04d}/eval" for r in runs if r.state == "COMPLETED"}
    assert evals <= set(seen["runs"])
    assert set(seen["runs"]) - {"trial-0002/eval"} == {"hparams", *trial_runs, *evals}
    experiment = seen["experiment"]
    assert [i["name"] for i in experiment["hparamInfos"]] == ["layers", "optimizer", "x", "y"]
    domains = {i["name"]: i for i in experiment["hparamInfos"]}
    assert domains["optimizer"]["domainDiscrete"] == ["adam", "sgd", "with space"]
    assert domains["y"]["domainInterval"] == {"minValue": 0.001, "maxValue": 0.1}
    # The INTEGER param: text, listed in numeric order (TensorBoard shows numbers as 2.0000).
    assert domains["layers"]["type"] == "DATA_TYPE_STRING"
    assert domains["layers"]["domainDiscrete"] == ["1", "2", "3", "4"]
    (metric,) = experiment["metricInfos"]
    assert metric["name"] == {"tag": "objective/rmse", "group": ""}

    groups = {g["name"]: g for g in seen["groups"]["sessionGroups"]}
    assert set(groups) == {f"viewed/{t}" for t in trial_runs}
    sessions = [s["name"] for g in groups.values() for s in g["sessions"]]
    with world.backend.db.session() as s:
        objectives = {r.number: repo.objective_value(s, r, "rmse") for r in runs}
    for run in runs:
        group = groups[f"viewed/trial-{run.number:04d}"]
        # The trainer's values; the INTEGER one as on its command line.
        assert group["hparams"] == {**run.params, "layers": str(run.params["layers"])}
        assert isinstance(run.params["layers"], int)
        shown = {name: pretty_print(value) for name, value in group["hparams"].items()}
        assert shown["layers"] == str(run.params["layers"])
        assert pretty_print(float(run.params["layers"])) == f"{run.params['layers']}.0000"
        assert shown["x"] == f"{run.params['x']:#.5g}"
        (session,) = group["sessions"]
        assert session["name"] == f"trial-{run.number:04d}"
        # Each run of the trial gets this session's hparams in TensorBoard's Time Series run
        # table, which links a run to the session whose name prefixes it (the longest one).
        linked = {r for r in seen["runs"] if time_series_session(r, sessions) == session["name"]}
        assert linked == {r for r in seen["runs"] if r.split("/")[0] == session["name"]}
        assert f"{session['name']}/eval" in linked or run.state != "COMPLETED"
        values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        if run.state == "COMPLETED":
            assert session["status"] == "STATUS_SUCCESS"
            assert values == {"objective/rmse": pytest.approx(objectives[run.number], rel=1e-6)}
        else:
            assert session["status"] == "STATUS_FAILURE"
            assert values == {}
        assert session["endTimeSecs"] >= session["startTimeSecs"] > 0


def test_session_files_are_neither_a_model_dir_nor_eval_data(world: World, viewed: StudySpec):
    _, runs = world.runs("viewed")
    study_dir = world.settings.artifact_root / "viewed"
    for run in runs:
        trial_dir = study_dir / f"trial-{run.number:04d}"
        start, end = hparams.session_files(trial_dir)  # in the trial dir itself
        assert start.parent == end.parent == trial_dir
        assert not (trial_dir / hparams.HPARAMS_DIR).exists()
        if run.state == "COMPLETED":
            (found,) = find_model_dirs(study_dir / f"trial-{run.number:04d}")
            assert (found.path, found.eval_dirs) == (".", ("eval",))
    with world.backend.db.session() as s:
        names = {st.eval_name for r in runs for st in repo.eval_steps(s, r.id)}
    assert names == {"eval"}


def test_session_start_is_written_again_when_the_trainer_wiped_it(tmp_path: Path):
    spec = make_spec("wiped", args=[], max_trials=1)
    trial_dir = tmp_path / "trial-0000"
    params = {"x": 0.5, "y": 0.01, "layers": 2, "optimizer": "sgd"}
    first = hparams.write_session_start(
        trial_dir, spec=spec, group="g", params=params, start_time=100.0
    )
    first.unlink()  # e.g. `shutil.rmtree(job_dir)` at the trainer's start
    path = hparams.write_session_end(
        trial_dir,
        spec=spec,
        group="g",
        params=params,
        start_time=100.0,
        state="COMPLETED",
        end_time=160.0,
        objective=hparams.Objective(step=40, value=0.25),
    )
    assert hparams.session_files(trial_dir) == [path]
    records = EventFileReader(path).read_records()  # every record's CRC is checked
    tags = []
    for record in records[1:]:
        event = event_pb2.Event.FromString(record)
        tags += [(event.step, v.tag) for v in event.summary.value]
    assert tags == [
        (0, "_hparams_/session_start_info"),
        (40, "objective/rmse"),
        (0, "_hparams_/session_end_info"),
    ]


# A trainer whose model dir is its trial dir (an Estimator's training summaries there, its
# evals in eval/), written while TensorBoard's Python loader reloads the logdir as a running
# `tensorboard --load_fast=false` does: that loader reads a run's files in name order and, once
# on a file, never goes back to an earlier one. The trainer's files are written by TensorBoard's
# own writer (on its TensorFlow stub), the session by the tuner.
LIVE_READ = """
import json, sys, time, types
from pathlib import Path
sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tuner.domain.spec import parse_spec
from tuner.outputs import hparams

logdir, spec = Path(sys.argv[1]), parse_spec(json.loads(sys.argv[2]))
trial = logdir / "trial-0000"
params = {"x": 0.5, "y": 0.01, "layers": 3, "optimizer": "adam"}
multiplexer = plugin_event_multiplexer.EventMultiplexer()

def scalar(writer, tag, step, value):
    value = summary_pb2.Summary.Value(tag=tag, simple_value=value)
    event = event_pb2.Event(wall_time=time.time(), step=step)
    event.summary.value.append(value)
    writer.add_event(event)
    writer.flush()

def reload():
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()

started = time.time()
hparams.write_session_start(trial, spec=spec, group="g", params=params, start_time=started)
train, evals = EventFileWriter(str(trial)), EventFileWriter(str(trial / "eval"))
scalar(train, "loss", 1, 1.0)
scalar(evals, "rmse", 1, 0.5)
reload()
scalar(train, "loss", 2, 0.8)  # after the loader read the trial dir's files once
scalar(evals, "rmse", 2, 0.4)
train.close()
evals.close()
reload()
hparams.write_session_end(
    trial, spec=spec, group="g", params=params, start_time=started, state="COMPLETED",
    end_time=time.time(), objective=hparams.Objective(step=2, value=0.4),
)
reload()
tags = multiplexer.GetAccumulator("trial-0000").Tags()["tensors"]
print(json.dumps({
    "runs": sorted(multiplexer.Runs()),
    "loss": [e.step for e in multiplexer.Tensors("trial-0000", "loss")],
    "tags": sorted(tags),
    "tensorflow": "tensorflow" in sys.modules,
}))
"""


def test_the_session_is_the_trial_run_read_live_beside_an_estimators_summaries(tmp_path: Path):
    spec = make_spec("live", args=[], max_trials=1)
    document = json.dumps(spec.to_document())
    done = subprocess.run(
        [sys.executable, "-c", LIVE_READ, str(tmp_path), document],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert not seen["tensorflow"]
    # No run of the tuner's own: the session is in the run of the trainer's training summaries.
    assert seen["runs"] == ["trial-0000", "trial-0000/eval"]
    # Training summaries written after the session start are read, and so is the session's end
    # written after the trainer's last file.
    assert seen["loss"] == [1, 2]
    assert seen["tags"] == [
        "_hparams_/session_end_info",
        "_hparams_/session_start_info",
        "loss",
        "objective/rmse",
    ]
    start, _train, end = sorted(p.name for p in (tmp_path / "trial-0000").iterdir() if p.is_file())
    assert start.startswith("events.out.tfevents.0000000000.")
    assert start.endswith(hparams.FILE_SUFFIX) and end.endswith(hparams.FILE_SUFFIX)


def test_integer_valued_params_are_text_listed_in_order_when_few(tmp_path: Path):
    spec = make_spec(
        "kinds",
        args=[],
        max_trials=1,
        params=[
            {"parameterName": "units", "type": "INTEGER", "minValue": 8, "maxValue": 1024},
            {"parameterName": "batch", "type": "DISCRETE", "discreteValues": [16, 32, 128]},
            {"parameterName": "rate", "type": "DISCRETE", "discreteValues": [0.5, 1, 2]},
        ],
    )
    summary = hparams.experiment_summary(spec, created=1.0)
    content = summary.value[0].metadata.plugin_data.content
    infos = {i.name: i for i in metadata.parse_experiment_plugin_data(content).hparam_infos}
    assert infos["units"].type == api_pb2.DATA_TYPE_STRING  # too many values to list
    assert not infos["units"].HasField("domain_discrete")
    assert infos["batch"].type == api_pb2.DATA_TYPE_STRING
    assert [v.string_value for v in infos["batch"].domain_discrete.values] == ["16", "32", "128"]
    assert infos["rate"].type == api_pb2.DATA_TYPE_FLOAT64  # 0.5 is no integer: numbers
    assert [v.number_value for v in infos["rate"].domain_discrete.values] == [0.5, 1.0, 2.0]

    values = {"units": 96, "batch": 32, "rate": 1}
    start = hparams.session_start_summary(spec, "g", values, 1.0)
    content = start.value[0].metadata.plugin_data.content
    info = metadata.parse_session_start_info_plugin_data(content)
    assert info.hparams["units"].string_value == "96"
    assert info.hparams["batch"].string_value == "32"
    assert info.hparams["rate"].number_value == 1.0


def _slow(name: str) -> StudySpec:
    return make_spec(
        name,
        args=["--train-steps=100", "--eval-every-steps=10", "--step-seconds=0.1"],
        max_trials=2,
    )


def test_study_deleted_in_the_dashboard_is_paused_with_the_reason(world: World):
    deleted: list[int] = []

    def delete_in_dashboard(event: JournalEntry) -> None:
        if event.kind == "eval" and not deleted:
            optuna_id = world.backend.storage.get_study_id_from_name("deleted")
            response = httpx.delete(f"{world.dashboard}/api/studies/{optuna_id}", timeout=10)
            assert response.status_code == 204, response.text
            deleted.append(optuna_id)

    world.run(_slow("deleted"), listener=delete_in_dashboard)
    study, runs = world.runs("deleted")
    assert deleted
    assert study.state == "STOPPED"
    reason = study.state_reason or ""
    assert reason.startswith("paused: its Optuna study 'deleted' was deleted outside the tuner")
    assert "delete the study (`tuner delete`) and submit it again" in reason
    (run,) = runs  # no second trial was started, none is enqueued
    assert run.state == "STOPPED"
    assert "deleted outside the tuner" in (run.failure_reason or "")
    # TensorBoard still gets the session's end.
    *_, path = hparams.session_files(world.settings.artifact_root / "deleted/trial-0000")
    last = event_pb2.Event.FromString(EventFileReader(path).read_records()[-1])
    assert last.summary.value[0].tag == "_hparams_/session_end_info"
    # Resumed, it is paused again at once, with the same reason, and starts no trial.
    study_ops.resume_study(world.backend, "deleted")
    StudyManager(world.backend, world.registry, world.settings, slots=1, studies=["deleted"]).run()
    again, runs = world.runs("deleted")
    assert again.state == "STOPPED"
    assert again.state_reason == f"paused: a trial could not be started: {reason[8:]}"
    assert len(runs) == 1


def test_study_deleted_in_the_dashboard_after_it_ended_leaves_new_trials_alone(world: World):
    fast = ["--train-steps=40", "--eval-every-steps=20"]
    world.run(make_spec("old", args=fast, max_trials=1))
    _, (old,) = world.runs("old")
    optuna_id = world.backend.storage.get_study_id_from_name("old")
    response = httpx.delete(f"{world.dashboard}/api/studies/{optuna_id}", timeout=10)
    assert response.status_code == 204, response.text

    world.run(make_spec("new", args=fast, max_trials=2))
    _, runs = world.runs("new")
    assert [(r.number, r.state) for r in runs] == [(0, "COMPLETED"), (1, "COMPLETED")]
    # SQLite gave the old study's freed trial id to the new study's first trial.
    assert runs[0].optuna_trial_id == old.optuna_trial_id
    trials = optuna.load_study(study_name="new", storage=world.backend.storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]  # none left RUNNING
    _, (old_again,) = world.runs("old")
    assert old_again.optuna_trial_id is None


def test_trial_told_in_the_dashboard_is_stopped_and_failed(world: World):
    told: list[int] = []

    def tell_in_dashboard(event: JournalEntry) -> None:
        if event.kind == "eval" and not told:
            storage = world.backend.storage
            study_id = storage.get_study_id_from_name("told")
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, event.number)
            body = {"state": "Complete", "values": [0.5]}
            response = httpx.post(
                f"{world.dashboard}/api/trials/{trial_id}/tell", json=body, timeout=10
            )
            assert response.status_code == 204, response.text
            told.append(event.number)

    world.run(_slow("told"), listener=tell_in_dashboard)
    _, runs = world.runs("told")
    assert told == [0]
    first = runs[0]
    assert first.state == "FAILED"
    assert "told COMPLETE (value 0.5) outside the tuner" in (first.failure_reason or "")
    assert first.exit_code is not None and first.exit_code != 0  # stopped, not run to the end
    # The study went on with its budget: the next trial ran to completion.
    assert [r.state for r in runs] == ["FAILED", "COMPLETED"]
    trial = optuna.load_study(study_name="told", storage=world.backend.storage).trials[0]
    assert trial.value == 0.5  # Optuna keeps what was told there
