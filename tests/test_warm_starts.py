"""Warm trial starts, as a user runs them: `tuner run` in a real subprocess, real forks.

A warm trial must be what a cold one is (argv, environment, session, stdio, signals, fresh
random state, the module as `__main__`), behave the same on a crash, a prune and a deadline,
survive its preloading parent's SIGKILL, leave no process behind after 50 trials, and fall
back to a cold start when it fails only warm.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tensorboard.compat.proto import event_pb2

from tuner.outputs import hparams
from tuner.outputs.events import EventFileReader, ScalarValue, parse_event
from tuner.persistence import Database
from tuner.persistence import repository as repo

REPO = Path(__file__).resolve().parents[1]
TUNER = [sys.executable, "-m", "tuner.cli"]

REGISTRY = """
trainers:
  probe_warm:
    module: tests.trainers.warm_probe
    workingDir: {repo}
    env: {{PROBE_REGISTRY_VALUE: "from the registry"}}
    preload: [numpy, examples.synthetic.task{extra}]
  probe_cold:
    module: tests.trainers.warm_probe
    workingDir: {repo}
    env: {{PROBE_REGISTRY_VALUE: "from the registry"}}
  houses_warm:
    module: examples.house_prices.task
    workingDir: {repo}
    env: {{TF_CPP_MIN_LOG_LEVEL: "2", CUDA_VISIBLE_DEVICES: ""}}
    preload: [tensorflow, tensorflow_estimator]
  houses_cold:
    module: examples.house_prices.task
    workingDir: {repo}
    env: {{TF_CPP_MIN_LOG_LEVEL: "2", CUDA_VISIBLE_DEVICES: ""}}
"""

SPEC = """
name: {name}
trainer: {trainer}
args: {args}
seed: 3
{extra}
trainingInput:
  hyperparameters:
    goal: MINIMIZE
    hyperparameterMetricTag: rmse
    maxTrials: {max_trials}
    maxParallelTrials: {parallel}
    maxFailedTrials: {max_trials}
    params:
      - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
"""


def environment(tmp_path: Path, *, preload_extra: str = "") -> dict[str, str]:
    registry = tmp_path / "trainers.yaml"
    registry.write_text(REGISTRY.format(repo=REPO, extra=preload_extra))
    env = dict(os.environ)
    env.update(
        TUNER_DATABASE_URL=f"sqlite:///{tmp_path / 'tuner.db'}",
        TUNER_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TUNER_TRAINERS_FILE=str(registry),
        TUNER_POLL_INTERVAL="0.05",
        TUNER_STOP_GRACE_SECONDS="3",
    )
    return env


def spec_file(
    tmp_path: Path,
    name: str,
    trainer: str,
    *,
    args: list[str],
    max_trials: int = 1,
    parallel: int = 1,
    extra: str = "",
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        SPEC.format(
            name=name,
            trainer=trainer,
            args=json.dumps(args),
            max_trials=max_trials,
            parallel=parallel,
            extra=extra,
        )
    )
    return path


def run_argv(spec: Path) -> list[str]:
    return [*TUNER, "-v", "run", str(spec), "--no-view"]


def run(env: dict[str, str], spec: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_argv(spec), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def start_run(env: dict[str, str], spec: Path, **output: Any) -> subprocess.Popen[str]:
    """`tuner run` in the background (to act on it while it runs)."""
    return subprocess.Popen(run_argv(spec), env=env, cwd=REPO, text=True, **output)


def runs_of(env: dict[str, str], name: str) -> list[Any]:
    db = Database(env["TUNER_DATABASE_URL"])
    try:
        with db.session() as s:
            return sorted(repo.runs(s, repo.get_study(s, name).id), key=lambda r: r.number)
    finally:
        db.dispose()


def probe(env: dict[str, str], study: str, number: int) -> dict[str, Any]:
    trial_dir = Path(env["TUNER_ARTIFACT_ROOT"]) / study / f"trial-{number:04d}"
    facts: dict[str, Any] = json.loads((trial_dir / "probe.json").read_text())
    return facts


def warm_trials(stderr: str) -> list[int]:
    return [int(n) for n in re.findall(r"trial (\d+) started \(pid \d+, warm\)", stderr)]


def parent_pids(stderr: str) -> list[int]:
    return [int(p) for p in re.findall(r"warm starts ready for .* \(pid (\d+)\)", stderr)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def processes_under(directory: Path) -> list[int]:
    """Live processes whose command line names `directory` (trials write under it)."""
    needle = os.fsencode(str(directory))
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes() and alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


SHORT = ["--train-steps=20", "--eval-every-steps=10"]


def test_a_warm_trial_sees_what_a_cold_trial_sees(tmp_path):
    env = environment(tmp_path)
    warm = run(env, spec_file(tmp_path, "warm", "probe_warm", args=SHORT, max_trials=2))
    cold = run(env, spec_file(tmp_path, "cold", "probe_cold", args=SHORT, max_trials=2))
    assert warm.returncode == 0, warm.stderr
    assert cold.returncode == 0, cold.stderr
    assert warm_trials(warm.stderr) == [0, 1]
    assert warm_trials(cold.stderr) == []
    facts = {mode: [probe(env, mode, n) for n in (0, 1)] for mode in ("warm", "cold")}
    for mode in ("warm", "cold"):
        first = facts[mode][0]
        trial_dir = Path(env["TUNER_ARTIFACT_ROOT"]) / mode / "trial-0000"
        assert first["name"] == "__main__"
        assert first["argv0"] == str(REPO / "tests/trainers/warm_probe.py")
        assert first["argv"][:2] == SHORT and first["argv"][2].startswith("--x=")
        assert first["argv"][-1] == f"--job-dir={trial_dir}"
        assert first["cwd"] == first["path0"] == str(REPO)
        assert first["own_session"] and first["own_group"] and first["stdin_is_devnull"]
        assert first["stdout"] == first["stderr"] == f"{trial_dir}.log"
        assert first["sigterm_default"] and first["sigint_python"]
        assert first["env"]["TF_CONFIG"] == json.dumps({"task": {"trial": "0"}})
        assert first["env"]["CLOUD_ML_JOB_ID"] == mode
        assert first["env"]["AIP_MODEL_DIR"] == f"{trial_dir}/model"
        assert first["env"]["PROBE_REGISTRY_VALUE"] == "from the registry"
        # NumPy's global generator is fresh in each trial, as in a cold start.
        assert facts[mode][0]["numpy_draw"] != facts[mode][1]["numpy_draw"]

    def comparable(f: dict[str, Any], mode: str) -> dict[str, Any]:
        drop = {"numpy_draw", "stdout", "stderr"}
        kept = {k: v for k, v in f.items() if k not in drop}
        kept["env"] = {k: (v or "").replace(f"/{mode}/", "/S/") for k, v in f["env"].items()}
        kept["env"]["CLOUD_ML_JOB_ID"] = "S"
        kept["argv"] = [a.replace(f"/{mode}/", "/S/") for a in f["argv"]]
        return kept

    assert comparable(facts["warm"][0], "warm") == comparable(facts["cold"][0], "cold")
    assert "probe written" in (Path(env["TUNER_ARTIFACT_ROOT"]) / "warm/trial-0000.log").read_text()
    assert [r.state for r in runs_of(env, "warm")] == ["COMPLETED", "COMPLETED"]


def _eval_values(trial_dir: Path, tag: str) -> dict[int, float]:
    values: dict[int, float] = {}
    for path in sorted((trial_dir / "eval").glob("events.out.tfevents.*")):
        for record in EventFileReader(path).read_records():
            for value in parse_event(record, "eval", path=str(path)):
                if isinstance(value, ScalarValue) and value.tag == tag:
                    values[value.step] = value.value
    return values


def test_warm_and_cold_estimators_give_the_same_metrics(tmp_path):
    env = environment(tmp_path)
    args = ["--train-steps=20", "--eval-every-steps=10", "--seed=11"]
    for name, trainer in (("est-warm", "houses_warm"), ("est-cold", "houses_cold")):
        spec = spec_file(tmp_path, name, trainer, args=args, extra="outputDirFlag: --job-dir")
        text = spec.read_text().replace(
            "{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}",
            "{parameterName: learning_rate, type: DOUBLE, minValue: 0.01, maxValue: 0.01001}",
        )
        spec.write_text(text)
        done = run(env, spec)
        assert done.returncode == 0, done.stderr
        assert (warm_trials(done.stderr) == [0]) == (trainer == "houses_warm")
    [warm], [cold] = runs_of(env, "est-warm"), runs_of(env, "est-cold")
    assert warm.state == cold.state == "COMPLETED"
    assert warm.params == cold.params
    root = Path(env["TUNER_ARTIFACT_ROOT"])
    warm_values = _eval_values(root / "est-warm/trial-0000", "rmse")
    cold_values = _eval_values(root / "est-cold/trial-0000", "rmse")
    assert sorted(warm_values) == [10, 20]
    assert warm_values == pytest.approx(cold_values, rel=1e-6)


def test_fifty_warm_trials_in_a_row_leave_nothing_behind(tmp_path):
    env = environment(tmp_path)
    spec = spec_file(tmp_path, "fifty", "probe_warm", args=SHORT, max_trials=50, parallel=2)
    done = run(env, spec, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(warm_trials(done.stderr)) == list(range(50))
    assert [r.state for r in runs_of(env, "fifty")] == ["COMPLETED"] * 50
    [parent] = parent_pids(done.stderr)
    assert not alive(parent), "the preloading parent outlived its manager"
    assert processes_under(Path(env["TUNER_ARTIFACT_ROOT"])) == []
    draws = {probe(env, "fifty", n)["numpy_draw"] for n in range(50)}
    assert len(draws) == 50


def test_warm_crash_deadline_and_prune_end_as_cold_ones_do(tmp_path):
    env = environment(tmp_path)
    outcomes = {}
    for trainer in ("probe_warm", "probe_cold"):
        crash = spec_file(
            tmp_path, f"crash-{trainer}", trainer, args=[*SHORT, "--probe-mode=raise"]
        )
        slow = spec_file(
            tmp_path,
            f"slow-{trainer}",
            trainer,
            args=["--train-steps=100", "--eval-every-steps=10", "--step-seconds=1"],
            extra="maxTrialDurationSeconds: 2",
        )
        for spec in (crash, slow):
            done = run(env, spec)  # the study fails: its one trial failed
            assert "FAILED: 1 trials failed" in done.stderr, done.stderr
            assert bool(warm_trials(done.stderr)) == (trainer == "probe_warm")
        outcomes[trainer] = [
            (r.state, r.exit_code, (r.failure_reason or "").split("\n")[0])
            for name in (f"crash-{trainer}", f"slow-{trainer}")
            for r in runs_of(env, name)
        ]
        log = (Path(env["TUNER_ARTIFACT_ROOT"]) / f"crash-{trainer}/trial-0000.log").read_text()
        assert "RuntimeError: probe asked to fail" in log
    assert outcomes["probe_warm"] == outcomes["probe_cold"]
    (crash_state, crash_code, _), (slow_state, slow_code, slow_reason) = outcomes["probe_warm"]
    assert (crash_state, crash_code) == ("FAILED", 1)
    assert slow_state == "FAILED" and slow_code == -signal.SIGTERM
    assert "maxTrialDurationSeconds=2" in slow_reason


def test_a_warm_trial_is_pruned_like_a_cold_one(tmp_path):
    env = environment(tmp_path)
    # The first trial is good; later ones are worse at every step and the median prunes them.
    extra = "earlyStopping: {type: median, startupTrials: 1}"
    args = ["--train-steps=60", "--eval-every-steps=10", "--step-seconds=0.3"]
    spec = spec_file(tmp_path, "prune", "probe_warm", args=args, max_trials=4, extra=extra)
    spec.write_text(
        spec.read_text()
        .replace(
            "{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}",
            "{parameterName: x, type: DISCRETE, discreteValues: [0.3, 5, 6, 7]}",
        )
        .replace("goal: MINIMIZE", "goal: MINIMIZE\n    algorithm: GRID_SEARCH")
    )
    done = run(env, spec)
    assert done.returncode == 0, done.stderr
    states = {r.params["x"]: r.state for r in runs_of(env, "prune")}
    assert len(warm_trials(done.stderr)) == 4
    assert states[0.3] == "COMPLETED"
    assert "PRUNED" in states.values()
    assert processes_under(Path(env["TUNER_ARTIFACT_ROOT"])) == []


def test_trials_survive_a_sigkill_of_their_preloading_parent(tmp_path):
    env = environment(tmp_path)
    args = ["--train-steps=40", "--eval-every-steps=10", "--step-seconds=0.5"]
    spec = spec_file(tmp_path, "killed", "probe_warm", args=args, max_trials=5, parallel=2)
    proc = start_run(env, spec, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parent = None
    deadline = time.monotonic() + 60
    log_dir = Path(env["TUNER_ARTIFACT_ROOT"]) / ".warm"
    while parent is None and time.monotonic() < deadline:
        running = [r for r in _runs_or_empty(env, "killed") if r.state == "RUNNING" and r.pid]
        if len(running) == 2 and log_dir.exists():
            parent = _zygote_pid()
        time.sleep(0.1)
    assert parent is not None, "no warm trial started"
    os.kill(parent, signal.SIGKILL)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    runs = runs_of(env, "killed")
    assert [r.state for r in runs] == ["COMPLETED"] * 5
    assert [r.exit_code for r in runs] == [0] * 5
    pids = parent_pids(err)
    assert len(pids) == 2 and pids[0] == parent, "the parent was not started again"
    assert len(warm_trials(err)) == 5
    assert processes_under(Path(env["TUNER_ARTIFACT_ROOT"])) == []


def _runs_or_empty(env: dict[str, str], name: str) -> list[Any]:
    try:
        return runs_of(env, name)
    except Exception:
        return []


def _zygote_pid() -> int | None:
    mine = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(re.search(r"PPid:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        if b"tuner/trial/zygote.py" in cmdline and _descends_from(ppid, mine):
            return int(entry.name)
    return None


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        pid = int(re.search(r"PPid:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return False


def test_a_trainer_that_fails_only_warm_falls_back_to_cold(tmp_path):
    env = environment(tmp_path, preload_extra=", tests.trainers.warm_probe_state")
    spec = spec_file(
        tmp_path,
        "fallback",
        "probe_warm",
        args=[*SHORT, "--probe-mode=fail-if-forked"],
        max_trials=3,
    )
    done = run(env, spec)
    assert done.returncode == 0, done.stderr
    runs = runs_of(env, "fallback")
    assert [r.state for r in runs] == ["COMPLETED"] * 3
    first = runs[0].problems
    assert any("warm start exited with code 3 before any eval" in p for p in first), first
    assert any("run again with a cold start" in p for p in first), first
    assert warm_trials(done.stderr) == [0]  # the later ones start cold
    for later in runs[1:]:
        assert any("started cold: warm starts are off" in p for p in later.problems)
    log = (Path(env["TUNER_ARTIFACT_ROOT"]) / "fallback/trial-0000.log").read_text()
    assert "used across a fork, refusing" in log and "starting it again cold" in log
    assert "probe written" in log
    assert not probe(env, "fallback", 0)["forked_from_importer"]
    # The cold start emptied the trial dir but for its TensorBoard session's start: the session
    # is that start and the end written after the retry, not a start written again.
    trial_dir = Path(env["TUNER_ARTIFACT_ROOT"]) / "fallback/trial-0000"
    start, end = hparams.session_files(trial_dir)
    assert start.name.startswith("events.out.tfevents.0000000000.")
    events = [event_pb2.Event.FromString(r) for r in EventFileReader(end).read_records()[1:]]
    tags = [v.tag for e in events for v in e.summary.value]
    assert tags[-1] == "_hparams_/session_end_info"
    assert "_hparams_/session_start_info" not in tags


def test_a_local_trainer_module_starts_warm_with_preload(tmp_path):
    env = environment(tmp_path)
    spec = spec_file(tmp_path, "local", "anything", args=SHORT, max_trials=2)
    done = subprocess.run(
        [*run_argv(spec), "--trainer-module", "tests.trainers.warm_probe", "--preload", "numpy"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert warm_trials(done.stderr) == [0, 1]
    refused = subprocess.run(
        [*TUNER, "run", str(spec), "--preload", "numpy"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "--preload needs --trainer-module" in refused.stderr


def test_a_killed_manager_leaves_no_parent_and_no_warm_trial(tmp_path):
    env = environment(tmp_path)
    env["TUNER_STOP_GRACE_SECONDS"] = "1"
    args = ["--train-steps=100", "--eval-every-steps=10", "--step-seconds=1"]
    spec = spec_file(tmp_path, "orphaned", "probe_warm", args=args, max_trials=4, parallel=2)
    proc = start_run(env, spec, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = Path(env["TUNER_ARTIFACT_ROOT"])
    parent = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (parent is None or len(processes_under(root)) < 2):
        parent = parent or _zygote_pid()
        time.sleep(0.1)
    assert parent is not None and len(processes_under(root)) == 2, "no two warm trials ran"
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (alive(parent) or processes_under(root)):
        time.sleep(0.1)
    assert not alive(parent), "the preloading parent outlived its killed manager"
    assert processes_under(root) == [], "warm trials outlived their killed manager"
