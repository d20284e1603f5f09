"""The deployment files, checked without an engine (the checks are in tests/deploy_checks.py,
which scripts/check-deploy.sh runs as a command)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.deploy_checks import (
    OVERRIDES,
    ROOT,
    DeployCheckError,
    Replayed,
    _local_targets,
    _pip_install,
    api_runtime_problems,
    build_context,
    compose_command,
    compose_config,
    compose_problems,
    docs_problems,
    emulate,
    gpu_example_problems,
    ignore_rules,
    ignored,
    image_problems,
    override_problems,
    planned,
    replay_images,
    same_install_plus_tf,
    tensorflow_problems,
    uncomment_examples,
    worker_problems,
)


def _project_copy(tmp: Path) -> Path:
    """A copy of the files the deployment checks read, for tests that break one of them."""
    copy = tmp / "project"
    for name in ("Dockerfile", ".dockerignore", "docker-compose.yml", "pyproject.toml"):
        copy.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    for path in build_context(ROOT, tmp / "context-source"):
        target = copy / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tmp / "context-source" / path, target)
    return copy


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    """The api target installed in a fresh virtualenv (the slow part: about a minute)."""
    return replay_images(tmp_path_factory.mktemp("replay"))


def test_compose_v2_validates_the_compose_file_and_the_contract_holds() -> None:
    assert compose_command(), "no Compose v2"
    assert compose_problems(compose_config()) == []


def test_compose_overrides_reach_every_service() -> None:
    model = compose_config(env=OVERRIDES)
    assert compose_problems(model, defaults=False) == []
    assert override_problems(model) == []


def test_the_commented_gpu_worker_is_valid_compose() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "# worker-gpu:" in text
    uncommented = uncomment_examples(text)
    assert "\n  worker-gpu:\n" in uncommented and "\n  worker-gpu-work:\n" in uncommented
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "docker-compose.yml")
        path.write_text(uncommented)
        model = compose_config(files=[path])
    assert compose_problems(model) == []
    assert gpu_example_problems(model) == []


def test_the_compose_and_registry_examples_of_the_docs_are_valid() -> None:
    assert docs_problems() == []


def test_compose_errors_and_contract_breaches_are_reported(tmp_path: Path) -> None:
    broken = (
        (ROOT / "docker-compose.yml")
        .read_text()
        .replace(
            "  migrate:\n    condition: service_completed_successfully",
            "  migrate-typo:\n    condition: service_completed_successfully",
        )
    )
    assert "migrate-typo" in broken
    (tmp_path / "docker-compose.yml").write_text(broken)
    with pytest.raises(DeployCheckError, match="migrate-typo"):
        compose_config(files=[tmp_path / "docker-compose.yml"])

    model = compose_config()
    services = model["services"]
    del services["worker-2"]["healthcheck"]
    services["api"]["restart"] = "always"
    services["worker-2"]["volumes"] = services["worker-1"]["volumes"]
    del services["worker-1"]["environment"]["AWS_REGION"]
    services["postgres"]["ports"] = [{"target": 5432, "published": "5432"}]
    services["worker-2"]["build"] = {"context": str(ROOT), "target": "worker"}
    problems = "\n".join(compose_problems(model))
    for expected in (
        "worker-2: no healthcheck",
        "api: restart is 'always'",
        "worker-2: shares worker-1-work with worker-1",
        "worker-1: AWS_REGION is not set",
        "postgres: publishes [5432]",
        "exactly one must build the image",
    ):
        assert expected in problems


def test_build_context_has_what_the_dockerfile_copies_and_nothing_private(tmp_path: Path) -> None:
    project = _project_copy(tmp_path)
    for private in (
        ".git/config",
        ".venv/bin/python",
        "tuner-data/tuner.db",
        ".env",
        "tests/x.py",
        "tuner/__pycache__/cli.cpython-311.pyc",
        "api/.mypy_cache/x",
        "docs/a.md",
    ):
        (project / private).parent.mkdir(parents=True, exist_ok=True)
        (project / private).write_text("private")
    sent = set(build_context(project, tmp_path / "context"))
    for needed in (
        "pyproject.toml",
        "README.md",
        "trainers.yaml",
        "tuner/cli/main.py",
        "tuner/persistence/database.py",
        "api/main.py",
        "api/web/index.html",
        "api/static/vendor/swagger-ui-bundle.js",
        "migrations/env.py",
        "examples/data/houses_train.csv",
        "examples/synthetic/task.py",
    ):
        assert needed in sent
    assert not {
        p
        for p in sent
        if p.split("/")[0] in (".git", ".venv", "tuner-data", "tests", "docs", ".env")
    }
    assert not [p for p in sent if "__pycache__" in p or ".mypy_cache" in p]


def test_dockerignore_matching_follows_docker() -> None:
    rules = ignore_rules("*\n!tuner/\n**/__pycache__\n**/*.py[cod]\n!keep/**/x.txt\n/docs\n")
    assert ignored("README.md", rules) and ignored(".git/HEAD", rules)
    assert not ignored("tuner/cli/main.py", rules)
    assert ignored("tuner/__pycache__/cli.cpython-311.pyc", rules)
    assert ignored("tuner/sub/mod.pyc", rules) and not ignored("tuner/sub/mod.py", rules)
    assert not ignored("keep/a/b/x.txt", rules) and ignored("keep/a/b/y.txt", rules)
    assert ignored("docs/x.md", rules)


def test_each_target_is_pinned_non_root_and_installs_its_own_extra(tmp_path: Path) -> None:
    api = emulate("api", scratch=tmp_path)
    worker = emulate("worker", scratch=tmp_path)
    assert image_problems(api) == [] and image_problems(worker) == []
    assert same_install_plus_tf(api, worker) == []
    assert api.steps[0][0] == "system"
    assert not api.path("/opt/estimator-tuner/trainers/examples").exists()
    assert worker.path("/opt/estimator-tuner/trainers/examples/data/houses_train.csv").is_file()
    assert api.exposed == ["8000"] and api.cmd[:2] == ["tuner", "serve"]
    assert worker.cmd[:2] == ["tuner", "worker"]


def test_broken_dockerfiles_are_caught(tmp_path: Path) -> None:
    project = _project_copy(tmp_path)
    dockerfile = (ROOT / "Dockerfile").read_text()

    (project / ".dockerignore").write_text(
        (ROOT / ".dockerignore").read_text().replace("!migrations/\n", "")
    )
    with pytest.raises(DeployCheckError, match="COPY migrations: not in the build context"):
        emulate("api", scratch=tmp_path / "a", project=project)
    shutil.copy2(ROOT / ".dockerignore", project / ".dockerignore")

    (project / "Dockerfile").write_text(dockerfile.replace("'.[analysis,tf]'", "'.[analysis]'"))
    worker = emulate("worker", scratch=tmp_path / "b", project=project)
    assert (
        "worker: installs the project as ['.[analysis]'], not ['.[analysis,tf]']"
        in image_problems(worker)
    )

    # An api without the analysis extra (no fANOVA), and a worker that no longer repeats it.
    (project / "Dockerfile").write_text(dockerfile.replace("'.[analysis]'", "."))
    api = emulate("api", scratch=tmp_path / "b2", project=project)
    worker = emulate("worker", scratch=tmp_path / "b3", project=project)
    assert "api: installs the project as ['.'], not ['.[analysis]']" in image_problems(api)
    (lacking,) = same_install_plus_tf(api, worker)
    assert lacking.startswith("worker: lacks the api's install step (with the tf extra): pip")

    (project / "Dockerfile").write_text(
        dockerfile.replace("USER 10001:10001\nWORKDIR /var/lib/tuner\nEXPOSE", "WORKDIR /x\nEXPOSE")
    )
    api = emulate("api", scratch=tmp_path / "c", project=project)
    assert any("not a fixed non-root uid" in p for p in image_problems(api))

    (project / "Dockerfile").write_text(dockerfile + "RUN curl -fsS https://example.invalid\n")
    with pytest.raises(DeployCheckError, match="a kind of step"):
        emulate("worker", scratch=tmp_path / "d", project=project)


def test_api_image_installs_a_working_tuner_without_tensorflow(replayed: Replayed) -> None:
    assert image_problems(replayed.api) == []
    assert api_runtime_problems(replayed.api, replayed.venv, replayed.scratch) == []


def test_worker_image_adds_exactly_the_tf_extra_and_its_trainers(replayed: Replayed) -> None:
    assert image_problems(replayed.worker) == []
    assert worker_problems(replayed.worker, replayed.reports, replayed.venv) == []
    assert {"tensorflow-cpu", "tensorflow-estimator"} <= set(planned(replayed.reports))


def test_tensorflow_in_the_base_dependencies_is_caught(replayed: Replayed, tmp_path: Path) -> None:
    project = _project_copy(tmp_path)
    pyproject = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        pyproject.replace(
            "dependencies = [\n", 'dependencies = [\n    "tensorflow-cpu==2.15.*",\n', 1
        )
    )
    reports = tmp_path / "reports"
    dry_run = replayed.venv.runner(tmp_path / "dry.log", reports=reports)

    def dependencies_only(command: str, cwd: Path, env: Mapping[str, str]) -> None:
        """The dependency layer is enough to see it (and the project's step resolves again)."""
        if not any(_local_targets(args) for args in _pip_install(command)):
            dry_run(command, cwd, env)

    emulate("api", scratch=tmp_path / "scratch", project=project, run=dependencies_only)
    problems = tensorflow_problems(planned(reports), "api")
    assert len(problems) == 1 and "'tensorflow-cpu'" in problems[0]
    assert tensorflow_problems(["tensorboard", "tensorboard-data-server", "optuna"], "api") == []
