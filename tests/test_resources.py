"""GPUs and CPUs per trial: `gpusPerTrial`/`cpusPerTrial`, `--gpus`/`--cpus`, what a trial sees.

Trials are the synthetic trainer behind `tests.trainers.device_probe`, which records the
`CUDA_VISIBLE_DEVICES` and thread counts it was started with (no GPU is needed: the tuner only
hands out ids). Managers run in-process on SQLite and PostgreSQL, or as real `tuner worker` and
`tuner run` processes.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import env_for
from tuner.domain.config import Settings
from tuner.domain.errors import SpecError
from tuner.domain.spec import StudySpec, load_spec_text, parse_spec
from tuner.domain.trainers import Trainer, TrainerRegistry
from tuner.engine.manager import StudyManager
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops
from tuner.study.operations import Backend
from tuner.trial.resources import Capacity, Need, ResourceLedger, parse_gpus

REPO = Path(__file__).resolve().parents[1]
TUNER = [sys.executable, "-m", "tuner.cli"]
PROBE = "tests.trainers.device_probe"
QUICK = ["--train-steps=20", "--eval-every-steps=10", "--step-seconds=0.25"]
LONG = ["--train-steps=400", "--eval-every-steps=10", "--step-seconds=0.5"]
REGISTRY = f"""
trainers:
  devices:
    module: {PROBE}
    workingDir: {REPO}
  devices_warm:
    module: {PROBE}
    workingDir: {REPO}
    preload: [numpy, examples.synthetic.task]
"""


def spec(
    name: str, *, trainer: str = "devices", args: list[str] = QUICK, **fields: Any
) -> StudySpec:
    trials = fields.pop("trials", 2)
    parallel = fields.pop("parallel", trials)
    return parse_spec(
        {
            "name": name,
            "trainer": trainer,
            "seed": 5,
            "args": args,
            **fields,
            "hyperparameters": {
                "goal": "MINIMIZE",
                "hyperparameterMetricTag": "rmse",
                "maxTrials": trials,
                "maxParallelTrials": parallel,
                "maxFailedTrials": trials,
                "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1}],
            },
        }
    )


def probe_registry(**env: str) -> TrainerRegistry:
    missing = Trainer(name="missing", argv=("/nonexistent/bin/train",), working_dir=REPO)
    registry = TrainerRegistry({"missing": missing})
    registry.register_module("devices", PROBE, working_dir=REPO)
    registry.register_module("devices_env", PROBE, working_dir=REPO, env=env)
    return registry


def seen(settings: Settings | Path, study: str, number: int) -> dict[str, Any]:
    root = settings.artifact_root if isinstance(settings, Settings) else settings
    facts: dict[str, Any] = json.loads(
        (root / study / f"trial-{number:04d}" / "devices.json").read_text()
    )
    return facts


def runs_of(backend: Backend, name: str) -> list[Any]:
    with backend.db.session() as s:
        return sorted(repo.runs(s, repo.get_study(s, name).id), key=lambda r: r.number)


def state_of(backend: Backend, name: str) -> str:
    with backend.db.session() as s:
        return repo.get_study(s, name).state


def overlapping(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["started"] < b["ended"] and b["started"] < a["ended"])


def most_at_once(trials: list[dict[str, Any]]) -> int:
    """The most trials that ran at the same time, by their own clocks."""
    edges = sorted([(t["started"], 1) for t in trials] + [(t["ended"], -1) for t in trials])
    return max(itertools.accumulate(change for _, change in edges))


def drive(manager: StudyManager, check: Any = None, timeout: float = 90) -> None:
    """Tick until the manager's studies are over, calling `check()` after every tick."""
    deadline = time.monotonic() + timeout
    try:
        while manager.tick():
            if check is not None:
                check()
            assert time.monotonic() < deadline, "the studies did not finish in time"
            time.sleep(manager.settings.poll_interval)
    finally:
        manager.shutdown()


# ----------------------------------------------------------------------------------------------
# The spec


HP = (
    "goal: MINIMIZE\nhyperparameterMetricTag: rmse\n"
    "params: [{parameterName: x, type: DOUBLE, minValue: 0, maxValue: 1}]\n"
)
WHOLE = "must be a whole number >= 0 (the GPUs each trial gets)"
POSITIVE = "must be a number > 0 (the CPUs each trial is counted for)"


def test_gpus_and_cpus_per_trial_are_read_and_stored() -> None:
    plain = load_spec_text("name: s\ntrainer: t\n" + HP)
    assert (plain.gpus_per_trial, plain.cpus_per_trial) == (0, None)
    # A spec that asks for nothing stores nothing new: managers that predate the fields read it.
    assert "gpusPerTrial" not in plain.to_document()
    assert "cpusPerTrial" not in plain.to_document()

    asked = load_spec_text("name: s\ntrainer: t\ngpusPerTrial: 2\ncpusPerTrial: 1.5\n" + HP)
    assert (asked.gpus_per_trial, asked.cpus_per_trial) == (2, 1.5)
    document = asked.to_document()
    assert (document["gpusPerTrial"], document["cpusPerTrial"]) == (2, 1.5)
    assert parse_spec(document) == asked
    snake = load_spec_text("name: s\ntrainer: t\ngpus_per_trial: 2.0\ncpus_per_trial: 4\n" + HP)
    assert (snake.gpus_per_trial, snake.cpus_per_trial) == (2, 4.0)
    # Beside `trainingInput` in a job file, like the other fields of ours.
    job = "name: s\ntrainer: t\ngpusPerTrial: 1\ntrainingInput:\n  hyperparameters:\n"
    assert load_spec_text(job + textwrap.indent(HP, "    ")).gpus_per_trial == 1


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ("gpusPerTrial: -1", "gpusPerTrial", WHOLE),
        ("gpusPerTrial: 1.5", "gpusPerTrial", WHOLE),
        ("gpusPerTrial: true", "gpusPerTrial", WHOLE),
        ("gpusPerTrial: '2'", "gpusPerTrial", WHOLE),
        ("gpusPerTrial: null", "gpusPerTrial", WHOLE),
        ("cpusPerTrial: 0", "cpusPerTrial", POSITIVE),
        ("cpusPerTrial: -2", "cpusPerTrial", POSITIVE),
        ("cpusPerTrial: .inf", "cpusPerTrial", POSITIVE),
        ("cpusPerTrial: four", "cpusPerTrial", POSITIVE),
        ("gpusPerTrail: 2", "gpusPerTrail", "unknown field; did you mean 'gpusPerTrial'?"),
    ],
)
def test_bad_gpus_and_cpus_per_trial_are_refused_by_name(
    line: str, field: str, reason: str
) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(f"name: s\ntrainer: t\n{line}\n" + HP, source="study.yaml")
    assert info.value.problems == [(field, reason)]
    assert f"study.yaml: invalid study spec\n  {field}: {reason}" in str(info.value)


def test_a_job_files_accelerators_point_to_gpus_per_trial() -> None:
    text = (
        "name: s\ntrainer: t\ntrainingInput:\n"
        "  masterConfig: {acceleratorConfig: {count: 2, type: NVIDIA_TESLA_T4}}\n"
        "  hyperparameters:\n" + textwrap.indent(HP, "    ")
    )
    notes: list[str] = []
    parsed = load_spec_text(text, warnings=notes)
    assert parsed.gpus_per_trial == 0  # a hint, not a silent change of where trials run
    assert notes == [
        "trainingInput.masterConfig: ignored, it does not concern tuning "
        "(for 2 GPUs per trial, set gpusPerTrial: 2 beside trainingInput)"
    ]


# ----------------------------------------------------------------------------------------------
# A manager's GPUs and CPUs


def test_gpu_ids_are_parsed_and_checked() -> None:
    assert parse_gpus(None) is None
    assert parse_gpus("none") == parse_gpus("") == parse_gpus(" None ") == ()
    assert parse_gpus("0,1,2,3") == (0, 1, 2, 3)
    assert parse_gpus(" 3, 1 ") == (3, 1)
    for text, problem in [
        ("0,1,1", "GPU 1 is listed twice"),
        ("-1", "'-1' is not a GPU id"),
        ("0,,1", "'' is not a GPU id"),
        ("gpu0", "'gpu0' is not a GPU id"),
        ("1.5", "'1.5' is not a GPU id"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            parse_gpus(text)


def test_a_ledger_gives_free_ids_and_frees_them_when_the_trial_leaves() -> None:
    running: dict[int, str] = {}
    ledger = ResourceLedger(Capacity(gpus=(3, 1, 0, 2), cpus=4), running)
    two = Need(gpus=2, cpus=1.5)
    first = ledger.grant(10, two)
    running[10] = "trial"
    second = ledger.grant(11, two)
    running[11] = "trial"
    assert (first.gpus, second.gpus) == ((3, 1), (0, 2))
    assert not ledger.fits(Need(gpus=1))
    assert ledger.fits(Need(gpus=0, cpus=1.0)) and not ledger.fits(Need(cpus=1.5))
    assert first.environment() == {"CUDA_VISIBLE_DEVICES": "3,1"}
    assert ledger.grant(12, Need()).environment() == {"CUDA_VISIBLE_DEVICES": ""}
    del running[10]  # however it ended
    assert ledger.free_gpus() == [3, 1]
    assert ledger.grant(13, Need(gpus=1)).gpus == (3,)
    unmanaged = ResourceLedger(Capacity(cpus=2), running)
    assert unmanaged.grant(14, Need(cpus=2)).environment() == {}


def test_what_never_fits_is_said_with_what_the_worker_has() -> None:
    assert Capacity(cpus=2).refusal(Need(gpus=1)) == (
        "needs 1 GPU per trial, this worker has 0 (started without --gpus)"
    )
    assert Capacity(gpus=(), cpus=2).refusal(Need(gpus=1)) == (
        "needs 1 GPU per trial, this worker has 0 (--gpus none)"
    )
    assert Capacity(gpus=(0, 1), cpus=2).refusal(Need(gpus=4)) == (
        "needs 4 GPUs per trial, this worker has 2 (--gpus 0,1)"
    )
    assert Capacity(gpus=(0, 1), cpus=2).refusal(Need(cpus=2.5)) == (
        "needs 2.5 CPUs per trial, this worker has 2 (--cpus)"
    )
    assert Capacity(gpus=(0, 1), cpus=2).refusal(Need(gpus=2, cpus=2)) is None


def test_gpu_trials_run_on_disjoint_devices_and_cpu_trials_see_none(backend, settings, caplog):
    # The CPU study's trainer names a GPU in its registry entry: on a manager with --gpus that
    # would share GPU 0 with a GPU trial, so the tuner's empty value replaces it. Its
    # OMP_NUM_THREADS is the registry's (an explicit choice), TF_NUM_INTRAOP_THREADS the spec's.
    registry = probe_registry(CUDA_VISIBLE_DEVICES="0", OMP_NUM_THREADS="7")
    study_ops.submit_study(
        backend, spec("gpu", gpusPerTrial=2, cpusPerTrial=1.5, trials=6, parallel=4), registry
    )
    study_ops.submit_study(backend, spec("cpu", trainer="devices_env", cpusPerTrial=1), registry)
    capacity = Capacity(gpus=(0, 1, 2, 3), cpus=8)
    manager = StudyManager(backend, registry, settings, slots=6, capacity=capacity)
    peak = 0

    def check() -> None:
        nonlocal peak
        held = manager.resources.held()
        assert set(held) == set(manager.active)
        on_gpus = [held[r].gpus or () for r, t in manager.active.items() if t.study.name == "gpu"]
        ids = [d for devices in on_gpus for d in devices]
        assert len(ids) == len(set(ids)) and len(on_gpus) <= 2, on_gpus
        peak = max(peak, len(on_gpus))
        for run_id, trial in manager.active.items():
            assert trial.command is not None
            given = ",".join(map(str, held[run_id].gpus or ()))
            assert trial.command.env["CUDA_VISIBLE_DEVICES"] == given

    with caplog.at_level(logging.WARNING, logger="tuner.trial.resources"):
        drive(manager, check)
    assert [r.getMessage() for r in caplog.records if r.name == "tuner.trial.resources"] == [
        "trainer 'devices_env': its registry env sets CUDA_VISIBLE_DEVICES='0'; on this "
        "worker (--gpus) each trial sees the GPUs it is given instead"
    ]
    assert peak == 2  # two GPU trials did run at once (and never more)
    assert [r.state for r in runs_of(backend, "gpu")] == ["COMPLETED"] * 6
    assert [r.state for r in runs_of(backend, "cpu")] == ["COMPLETED"] * 2
    trials = [seen(settings, "gpu", n) for n in range(6)]
    for facts in trials:
        devices = facts["env"]["CUDA_VISIBLE_DEVICES"].split(",")
        assert len(devices) == 2 and set(devices) <= {"0", "1", "2", "3"}, facts
        assert facts["env"]["TF_NUM_INTRAOP_THREADS"] == facts["env"]["OMP_NUM_THREADS"] == "2"
    for a, b in itertools.combinations(trials, 2):
        if overlapping(a, b):
            shared = set(a["env"]["CUDA_VISIBLE_DEVICES"].split(",")) & set(
                b["env"]["CUDA_VISIBLE_DEVICES"].split(",")
            )
            assert not shared, (a, b)
    assert most_at_once(trials) == 2
    for number in (0, 1):
        assert seen(settings, "cpu", number)["env"] == {
            "CUDA_VISIBLE_DEVICES": "",
            "TF_NUM_INTRAOP_THREADS": "1",
            "OMP_NUM_THREADS": "7",
        }


def test_cpus_per_trial_are_counted_and_a_study_that_never_fits_is_left(backend, settings, caplog):
    registry = probe_registry()
    study_ops.submit_study(backend, spec("two", cpusPerTrial=2, trials=3), registry)
    study_ops.submit_study(backend, spec("gpu", gpusPerTrial=1), registry)
    study_ops.submit_study(backend, spec("big", cpusPerTrial=3.5), registry)
    manager = StudyManager(
        backend,
        registry,
        settings,
        slots=3,
        studies=["two", "gpu", "big"],
        capacity=Capacity(cpus=3),
    )
    peak = 0

    def check() -> None:
        nonlocal peak
        peak = max(peak, len(manager.active))

    with caplog.at_level(logging.WARNING, logger="tuner.engine.manager"):
        drive(manager, check)
    assert peak == 1  # 2 + 2 CPUs do not fit in 3
    assert [r.state for r in runs_of(backend, "two")] == ["COMPLETED"] * 3
    assert runs_of(backend, "gpu") == runs_of(backend, "big") == []
    assert state_of(backend, "gpu") == state_of(backend, "big") == "RUNNING"
    said = [r.getMessage() for r in caplog.records if "left to others" in r.getMessage()]
    assert said == [
        "study gpu: needs 1 GPU per trial, this worker has 0 (started without --gpus); "
        "left to others",
        "study big: needs 3.5 CPUs per trial, this worker has 3 (--cpus); left to others",
    ]
    # GPUs not managed: the trial's CUDA_VISIBLE_DEVICES is the manager's own, untouched.
    facts = seen(settings, "two", 0)
    assert facts["env"]["CUDA_VISIBLE_DEVICES"] == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert facts["env"]["TF_NUM_INTRAOP_THREADS"] == "2"


def test_gpus_are_freed_after_a_failed_start_a_takeover_and_a_shutdown(backend, settings):
    registry = probe_registry()
    capacity = Capacity(gpus=(0, 1), cpus=2)
    quick = settings.model_copy(update={"heartbeat_timeout": 3.0})
    # Each trial needs both GPUs: the second and third start only if the first freed them.
    study_ops.submit_study(
        backend, spec("unstartable", trainer="missing", gpusPerTrial=2, trials=3), registry
    )
    manager = StudyManager(backend, registry, quick, slots=2, capacity=capacity)
    drive(manager, timeout=30)
    runs = runs_of(backend, "unstartable")
    assert [r.state for r in runs] == ["FAILED"] * 3
    assert "could not start /nonexistent/bin/train" in (runs[0].failure_reason or "")

    study_ops.submit_study(backend, spec("taken", args=LONG, gpusPerTrial=2, trials=3), registry)
    manager = StudyManager(backend, registry, quick, slots=2, capacity=capacity)
    try:
        manager.tick()
        (first,) = manager.active.values()
        with backend.db.session() as s:
            (run,) = repo.active_runs(s)
            assert repo.take_over(s, run, reason="taken over in a test")
        deadline = time.monotonic() + 20
        while first.run_id in manager.active or not manager.active:
            assert time.monotonic() < deadline, "the taken-over trial was not given up"
            manager.tick()
            time.sleep(quick.poll_interval)
        assert first.process.poll() is not None  # killed
        (second,) = manager.active.values()
        assert manager.resources.held()[second.run_id].gpus == (0, 1)
    finally:
        manager.shutdown()
    assert manager.resources.held() == {}
    assert manager.resources.free_gpus() == [0, 1]
    assert [r.state for r in runs_of(backend, "taken")] == ["STOPPED", "STOPPED"]


# ----------------------------------------------------------------------------------------------
# Real processes


def registry_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    (tmp_path / "trainers.yaml").write_text(REGISTRY)
    return env_for(database_url, tmp_path) | {
        "TUNER_TRAINERS_FILE": str(tmp_path / "trainers.yaml")
    }


def start_worker(env: dict[str, str], log: Path, *options: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*TUNER, "worker", "--slots", "2", *options],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until_over(backend: Backend, name: str, logs: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while state_of(backend, name) == "RUNNING":
        assert time.monotonic() < deadline, "\n".join(log.read_text() for log in logs)
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def worker_id(log: Path) -> str:
    found = re.search(r"worker (\S+): \d+ slot", log.read_text())
    assert found, log.read_text()
    return found.group(1)


def test_a_worker_without_gpus_leaves_gpu_trials_to_one_with_them(pg_url, tmp_path):
    env = registry_env(tmp_path, pg_url)
    backend = Backend.connect(pg_url)
    registry = TrainerRegistry.from_file(tmp_path / "trainers.yaml")
    cpu_log, gpu_log = tmp_path / "cpu-worker.log", tmp_path / "gpu-worker.log"
    workers = []
    try:
        study_ops.submit_study(backend, spec("gpu", gpusPerTrial=2), registry)
        study_ops.submit_study(backend, spec("cpu", trials=3), registry)
        started = time.monotonic()
        workers.append(start_worker(env, cpu_log))
        # The worker without GPUs runs the CPU study meanwhile: it works, and still leaves
        # every trial of the GPU study alone, however long it goes on.
        wait_until_over(backend, "cpu", [cpu_log])
        time.sleep(max(0.0, started + 5 - time.monotonic()))
        assert runs_of(backend, "gpu") == []
        workers.append(start_worker(env, gpu_log, "--gpus", "0,1"))
        wait_until_over(backend, "gpu", [cpu_log, gpu_log])
    finally:
        for worker in workers:
            stop(worker)
        backend.close()
    gpu_runs = runs_of_url(pg_url, "gpu")
    assert [r.state for r in gpu_runs] == ["COMPLETED"] * 2
    assert {r.worker for r in gpu_runs} == {worker_id(gpu_log)}
    assert {r.worker for r in runs_of_url(pg_url, "cpu")} == {worker_id(cpu_log)}
    root = tmp_path / "artifacts"
    assert [seen(root, "gpu", n)["env"]["CUDA_VISIBLE_DEVICES"] for n in (0, 1)] == ["0,1"] * 2
    cpu_said = cpu_log.read_text()
    assert cpu_said.count("study gpu: needs 2 GPUs per trial, this worker has 0") == 1
    assert "left to others" in cpu_said
    assert "2 slot(s), GPUs not managed" in cpu_said
    assert "2 slot(s), GPUs 0,1," in gpu_log.read_text()


def runs_of_url(url: str, name: str) -> list[Any]:
    backend = Backend.connect(url)
    try:
        return runs_of(backend, name)
    finally:
        backend.close()


@pytest.mark.parametrize("trainer", ["devices", "devices_warm"])
def test_cold_and_warm_trials_see_the_gpus_they_were_given(tmp_path, trainer):
    env = registry_env(tmp_path, f"sqlite:///{tmp_path / 'tuner.db'}")
    path = tmp_path / "study.json"
    study = spec("devices", trainer=trainer, gpusPerTrial=1, cpusPerTrial=2, trials=4)
    path.write_text(json.dumps(study.to_document()))
    done = subprocess.run(
        [*TUNER, "-v", "run", str(path), "--no-view", "--gpus", "1,3", "--cpus", "4"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    started = re.findall(
        r"trial (\d+) started \(pid \d+(, warm)?, GPUs (\d+), 2 CPUs\)", done.stderr
    )
    assert sorted(int(n) for n, _, _ in started) == [0, 1, 2, 3], done.stderr
    assert {bool(warm) for _, warm, _ in started} == {trainer == "devices_warm"}
    trials = [seen(tmp_path / "artifacts", "devices", n) for n in range(4)]
    given = {int(number): ids for number, _, ids in started}
    for number, facts in enumerate(trials):
        # What CUDA reads (the process environment) is what Python sees, warm or cold.
        assert facts["c_env"] == facts["env"], facts
        assert facts["env"]["CUDA_VISIBLE_DEVICES"] == given[number]
        assert facts["env"]["TF_NUM_INTRAOP_THREADS"] == "2"
    for a, b in itertools.combinations(trials, 2):
        if overlapping(a, b):
            assert a["env"]["CUDA_VISIBLE_DEVICES"] != b["env"]["CUDA_VISIBLE_DEVICES"]
    assert {f["env"]["CUDA_VISIBLE_DEVICES"] for f in trials} == {"1", "3"}
    if trainer == "devices_warm":
        # Per-trial device sets are applied in each fork: one parent serves them all.
        assert len(re.findall(r"warm starts ready for", done.stderr)) == 1


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["worker", "--gpus", "0,1,0"], "error: --gpus: GPU 0 is listed twice"),
        (["worker", "--gpus", "0,-1"], "error: --gpus: '-1' is not a GPU id"),
        (["worker", "--cpus", "0"], "error: --cpus: must be a number > 0, got 0"),
        (["serve", "--gpus", "all"], "error: --gpus: 'all' is not a GPU id"),
        (
            ["run", "{spec}"],
            "error: study 'g' cannot run here: it needs 2 GPUs per trial, this worker has 0 "
            "(started without --gpus)",
        ),
        (
            ["run", "{spec}", "--gpus", "0", "--cpus", "8"],
            "error: study 'g' cannot run here: it needs 2 GPUs per trial, this worker has 1 "
            "(--gpus 0)",
        ),
    ],
)
def test_bad_options_and_a_study_that_cannot_run_here_are_refused(tmp_path, command, message):
    env = registry_env(tmp_path, f"sqlite:///{tmp_path / 'tuner.db'}")
    path = tmp_path / "g.json"
    path.write_text(json.dumps(spec("g", gpusPerTrial=2).to_document()))
    argv = [part.replace("{spec}", str(path)) for part in command]
    done = subprocess.run(
        [*TUNER, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert message in " ".join(done.stderr.split()), done.stderr
    assert not (tmp_path / "tuner.db").exists()  # refused before anything started
