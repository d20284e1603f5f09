"""The Kubernetes manifests (deploy/kubernetes/), rendered and checked without a cluster.

Rendering: the real kustomize when one is on PATH (`kustomize build`, or the kustomize built into
`kubectl kustomize`, v5 or later); otherwise `render_kustomization` below, a small renderer of
the kustomization features these manifests use (resources, namespace, labels, images, JSON
patches and strategic-merge deletions), which refuses any other. When both are there, the two
renderings must be the same, so the small renderer cannot drift from kustomize.

Schemas: every object against the Kubernetes 1.30 schemas of kubernetes-validate, strict (an
unknown field fails). KubeRay's RayCluster is a CRD that those schemas do not have: its pod
templates are validated as core PodTemplates, and its own fields are checked against KubeRay's
ray.io/v1 types (`raycluster_problems`).

The checks return problems (empty: fine), and each one is also run on a broken copy of the
rendering to show that it notices.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml

from tuner.cli.main import ALIVE_FILE, app
from tuner.domain.config import Settings
from tuner.domain.trainers import TrainerRegistry
from tuner.engine.leases import fence_after

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = {"base": KUBE / "base", "kuberay": KUBE / "overlays" / "kuberay"}
#: The Kubernetes version the manifests are validated against (a schema set kubernetes-validate
#: ships).
KUBERNETES_VERSION = "1.30.0"
#: The Secret the user creates (docs/deploy.md); the manifests only reference it.
SECRET = "tuner-secrets"
SECRET_KEYS = (
    "TUNER_DATABASE_URL",
    "TUNER_ARTIFACT_ROOT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
)
#: The user the Dockerfile's images run as (USER 10001:10001).
IMAGE_UID = 10001
IMAGES = ("estimator-tuner-api", "estimator-tuner-worker", "estimator-tuner-worker-gpu")
#: The dir the Dockerfile copies the bundled trainers (examples/) and their registry to.
TRAINERS_DIR = "/opt/estimator-tuner/trainers"
GPU = "nvidia.com/gpu"
RAY_CLIENT_PORT = 10001

Obj = dict[str, Any]


# -- the small renderer ----------------------------------------------------------------------


class UnsupportedKustomization(Exception):
    """A kustomization uses a feature that `render_kustomization` does not implement."""


_KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "resources",
    "patches",
    "images",
}


def render_kustomization(directory: Path) -> list[Obj]:
    """What `kustomize build DIRECTORY` prints, for the features these manifests use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZATION_FIELDS
    if unknown:
        raise UnsupportedKustomization(f"{directory}: {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects += render_kustomization(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        objects = _apply_patch(objects, directory, patch)
    for image in kustomization.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    for labels in kustomization.get("labels", []):
        if set(labels) != {"pairs"}:
            raise UnsupportedKustomization(f"labels with {sorted(set(labels) - {'pairs'})}")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(labels["pairs"])
    if "namespace" in kustomization:
        for obj in objects:
            obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def _matches(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    wanted = {"group": group, "version": version, "kind": obj["kind"]}
    wanted["name"] = obj["metadata"]["name"]
    unknown = set(target) - set(wanted)
    if unknown:
        raise UnsupportedKustomization(f"patch targets by {sorted(unknown)}")
    return all(wanted[key] == value for key, value in target.items())


def _apply_patch(objects: list[Obj], directory: Path, patch: Obj) -> list[Obj]:
    if set(patch) - {"path", "target"}:
        raise UnsupportedKustomization(f"patch fields {sorted(set(patch) - {'path', 'target'})}")
    docs = [doc for doc in yaml.safe_load_all((directory / patch["path"]).read_text()) if doc]
    if len(docs) == 1 and isinstance(docs[0], list):  # a JSON patch (RFC 6902)
        targets = [obj for obj in objects if _matches(obj, patch["target"])]
        if not targets:
            raise UnsupportedKustomization(f"{patch['path']}: no object matches its target")
        for obj in targets:
            for operation in docs[0]:
                _json_patch(obj, operation)
        return objects
    for doc in docs:  # strategic-merge patches: only deletions here
        if len(docs) != 1 or doc.get("$patch") != "delete" or "target" in patch:
            raise UnsupportedKustomization(f"{patch['path']}: only one `$patch: delete` a file")
        target = {"kind": doc["kind"], "name": doc["metadata"]["name"]}
        target["group"] = doc["apiVersion"].rpartition("/")[0]
        kept = [obj for obj in objects if not _matches(obj, target)]
        if len(kept) == len(objects):
            raise UnsupportedKustomization(f"{patch['path']}: deletes nothing")
        objects = kept
    return objects


def _json_patch(obj: Obj, operation: Obj) -> None:
    *parents, last = [
        part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]
    ]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, operation["value"])
        elif op == "replace":
            node[index] = operation["value"]
        elif op == "remove":
            del node[index]
        else:
            raise UnsupportedKustomization(f"JSON patch op {op}")
    elif op in ("add", "replace"):
        if op == "replace" and last not in node:
            raise KeyError(operation["path"])
        node[last] = operation["value"]
    elif op == "remove":
        del node[last]
    else:
        raise UnsupportedKustomization(f"JSON patch op {op}")


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        raise UnsupportedKustomization(f"image digests ({image})")
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, None
    return name, tag


def _set_image(node: Any, image: Obj) -> None:
    """kustomize's `images`: every container's image of that name, at any depth."""
    if set(image) - {"name", "newName", "newTag"}:
        raise UnsupportedKustomization(f"images fields {sorted(image)}")
    if isinstance(node, list):
        for item in node:
            _set_image(item, image)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for container in value:
                name, tag = _split_image(container.get("image", ""))
                if name == image["name"]:
                    tag = image.get("newTag", tag)
                    new = image.get("newName", name)
                    container["image"] = f"{new}:{tag}" if tag else new
        _set_image(value, image)


# -- rendering -------------------------------------------------------------------------------


def _kustomize_command() -> list[str] | None:
    """A real kustomize (v5 or later) on PATH: standalone, or kubectl's."""
    if shutil.which("kustomize"):
        version = subprocess.run(
            ["kustomize", "version"], capture_output=True, text=True, check=False
        ).stdout
        if re.search(r"v([5-9]|\d\d)\.", version):
            return ["kustomize", "build"]
    if shutil.which("kubectl"):
        shown = subprocess.run(
            ["kubectl", "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            version = json.loads(shown.stdout).get("kustomizeVersion", "")
        except json.JSONDecodeError:
            version = ""
        if re.match(r"v([5-9]|\d\d)\.", version):
            return ["kubectl", "kustomize"]
    return None


def _key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def render(directory: Path) -> tuple[str, list[Obj]]:
    """(renderer, objects) of a kustomization; both renderers must agree when both exist."""
    small = render_kustomization(directory)
    command = _kustomize_command()
    if command is None:
        return "render_kustomization", small
    output = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, check=True
    ).stdout
    real = [doc for doc in yaml.safe_load_all(output) if doc]
    by_key = {_key(obj): obj for obj in small}
    assert sorted(by_key) == sorted(_key(obj) for obj in real), (
        f"{directory}: {' '.join(command)} and render_kustomization render different objects"
    )
    for obj in real:
        assert obj == by_key[_key(obj)], (
            f"{directory}: {' '.join(command)} and render_kustomization differ on {_key(obj)}"
        )
    return " ".join(command), real


@functools.cache
def _rendered(name: str) -> tuple[str, list[Obj]]:
    return render(KUSTOMIZATIONS[name])


def rendered(name: str) -> list[Obj]:
    """The objects of a kustomization (a copy: tests may change it)."""
    return copy.deepcopy(_rendered(name)[1])


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


# -- walking the objects ---------------------------------------------------------------------


def pod_specs(objects: list[Obj]) -> Iterator[tuple[str, Obj]]:
    """(where, pod spec) of every pod the objects make."""
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield where, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "RayCluster":
            yield f"{where} head", obj["spec"]["headGroupSpec"]["template"]["spec"]
            for group in obj["spec"].get("workerGroupSpecs", []):
                yield f"{where} {group['groupName']}", group["template"]["spec"]


def containers(objects: list[Obj]) -> Iterator[tuple[str, Obj, Obj]]:
    """(where, pod spec, container) of every container, init containers too."""
    for where, pod in pod_specs(objects):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            yield f"{where} {container['name']}", pod, container


def argv(container: Obj) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def option(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` (None: absent)."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def env(container: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def is_ray_node(where: str) -> bool:
    return where.startswith("RayCluster/")


def runs_trials(where: str, container: Obj) -> bool:
    """A tuner worker or a Ray node (where trials' supervisors run)."""
    return argv(container)[:2] == ["tuner", "worker"] or is_ray_node(where)


def quantity(value: str | int | float) -> float:
    text = str(value)
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    suffixes |= {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def cli_problem(args: list[str]) -> str | None:
    """Why the real `tuner` CLI would refuse these arguments (None: it parses them)."""
    if args[:1] != ["tuner"]:
        return f"not a tuner command: {args}"
    command: Any = typer.main.get_command(app)
    name, rest = "tuner", args[1:]
    try:
        context = command.make_context(name, rest)
        while hasattr(command, "resolve_command"):  # a group: its subcommand
            pending = getattr(context, "_protected_args", None)
            if pending is None:
                pending = context.protected_args
            name, command, rest = command.resolve_command(context, [*pending, *context.args])
            context = command.make_context(name, rest, parent=context)
    except Exception as exc:
        return f"{' '.join(args)}: {getattr(exc, 'format_message', exc.__str__)()}"
    return None


# -- the checks: each returns its problems ---------------------------------------------------


def schema_problems(objects: list[Obj]) -> list[str]:
    problems = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"] == "ray.io/v1" and obj["kind"] == "RayCluster":
            checked = [
                {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": "t"},
                    "template": t,
                }
                for t in _ray_templates(obj)
            ]
        else:
            checked = [obj]
        for item in checked:
            try:
                kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                problems.append(f"{where}: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{where}: {exc.message}")
    return problems


def _ray_templates(cluster: Obj) -> list[Obj]:
    spec = cluster.get("spec", {})
    groups = [spec.get("headGroupSpec", {}), *spec.get("workerGroupSpecs", [])]
    return [group["template"] for group in groups if "template" in group]


#: KubeRay's ray.io/v1 types (ray-operator/apis/ray/v1/raycluster_types.go): the fields, and
#: those without `omitempty` that its CRD requires.
_RAY_SPEC = frozenset(
    [
        "headGroupSpec",
        "workerGroupSpecs",
        "rayVersion",
        "enableInTreeAutoscaling",
        "autoscalerOptions",
        "headServiceAnnotations",
        "suspend",
        "managedBy",
        "gcsFaultToleranceOptions",
    ]
)
_RAY_HEAD = frozenset(["serviceType", "headService", "enableIngress", "rayStartParams", "template"])
_RAY_WORKER = frozenset(
    [
        "groupName",
        "replicas",
        "minReplicas",
        "maxReplicas",
        "numOfHosts",
        "rayStartParams",
        "template",
        "scaleStrategy",
        "suspend",
        "idleTimeoutSeconds",
    ]
)
_RAY_WORKER_REQUIRED = {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"}


def raycluster_problems(cluster: Obj) -> list[str]:
    """A RayCluster's own fields, against KubeRay's ray.io/v1 types."""
    problems = []
    if set(cluster) - {"apiVersion", "kind", "metadata", "spec"}:
        problems.append(f"unknown top-level fields {sorted(set(cluster) - {'spec'})}")
    spec = cluster.get("spec", {})
    problems += [f"spec.{f}: unknown field" for f in sorted(set(spec) - _RAY_SPEC)]
    if not isinstance(spec.get("rayVersion"), str):
        problems.append("spec.rayVersion: a string")
    head = spec.get("headGroupSpec")
    if not isinstance(head, dict):
        return [*problems, "spec.headGroupSpec: required"]
    groups = [("spec.headGroupSpec", head, _RAY_HEAD, {"rayStartParams", "template"})]
    for i, group in enumerate(spec.get("workerGroupSpecs", [])):
        groups.append((f"spec.workerGroupSpecs[{i}]", group, _RAY_WORKER, _RAY_WORKER_REQUIRED))
    for where, group, known, required in groups:
        problems += [f"{where}.{f}: unknown field" for f in sorted(set(group) - known)]
        problems += [f"{where}.{f}: required" for f in sorted(required - set(group))]
        params = group.get("rayStartParams", {})
        problems += [
            f"{where}.rayStartParams.{k}: {v!r} is not a string (the CRD's values are strings)"
            for k, v in params.items()
            if not isinstance(v, str)
        ]
        if "template" in group and not group["template"].get("spec", {}).get("containers"):
            problems.append(f"{where}.template.spec.containers: required")
    names = [g.get("groupName") for g in spec.get("workerGroupSpecs", [])]
    if len(set(names)) != len(names):
        problems.append(f"spec.workerGroupSpecs: group names repeat ({names})")
    for group in spec.get("workerGroupSpecs", []):
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        if not low <= group.get("replicas", low) <= high:
            problems.append(f"group {group.get('groupName')}: replicas outside min..max")
    return problems


def security_problems(objects: list[Obj]) -> list[str]:
    """Every container non-root (the images' uid and gid), unprivileged, read-only root."""
    problems = []
    for where, pod, container in containers(objects):
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        expected = {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID}
        expected |= {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}
        problems += [
            f"{where}: securityContext.{key} is {context.get(key)!r}, not {value!r}"
            for key, value in expected.items()
            if context.get(key) != value
        ]
        if context.get("privileged"):
            problems.append(f"{where}: privileged")
        capabilities = context.get("capabilities", {})
        if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
            problems.append(f"{where}: capabilities must drop ALL and add none")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a service account token it does not use")
        mounts = container.get("volumeMounts", [])
        writable = {m["mountPath"] for m in mounts if not m.get("readOnly")}
        if "/tmp" not in writable:
            problems.append(f"{where}: /tmp is not writable")
        work_dir = env(container).get("TUNER_WORK_DIR")
        if work_dir and not any(PurePosixPath(work_dir).is_relative_to(m) for m in writable):
            problems.append(f"{where}: TUNER_WORK_DIR {work_dir} is on the read-only root")
    return problems


def grace_problems(objects: list[Obj]) -> list[str]:
    """A pod that runs trials lives longer after SIGTERM than the fence time plus the stop grace
    (tuner/engine/leases.py), with the settings its container really has."""
    defaults = Settings.model_fields
    problems = []
    for where, pod, container in containers(objects):
        if not runs_trials(where, container):
            continue
        settings = env(container)
        timeout = float(
            settings.get("TUNER_HEARTBEAT_TIMEOUT", defaults["heartbeat_timeout"].default)
        )
        stop_grace = float(
            settings.get("TUNER_STOP_GRACE_SECONDS", defaults["stop_grace_seconds"].default)
        )
        needed = fence_after(timeout, stop_grace) + stop_grace
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= needed:
            problems.append(
                f"{where}: terminationGracePeriodSeconds {grace} <= fence_after({timeout:g}, "
                f"{stop_grace:g}) + {stop_grace:g} = {needed:g}"
            )
    return problems


def resource_problems(objects: list[Obj]) -> list[str]:
    """GPUs: `--gpus` names as many GPUs as the pod's nvidia.com/gpu limit (Ray: num-gpus);
    CPUs: `--cpus` (Ray: num-cpus) is the CPU limit; every container has requests and limits."""
    problems = []
    for where, _, container in containers(objects):
        resources = container.get("resources", {})
        limits, requests = resources.get("limits", {}), resources.get("requests", {})
        for kind in ("cpu", "memory"):
            if kind not in limits or kind not in requests:
                problems.append(f"{where}: no {kind} request and limit")
            elif quantity(requests[kind]) > quantity(limits[kind]):
                problems.append(f"{where}: {kind} request above its limit")
        gpus = int(limits.get(GPU, 0))
        if GPU in requests and int(requests[GPU]) != gpus:
            problems.append(f"{where}: {GPU} request differs from its limit")
        args = argv(container)
        if args[:2] == ["tuner", "worker"]:
            ids = option(args, "--gpus")
            named = 0 if ids in (None, "none") else len(ids.split(","))
            if named != gpus:
                problems.append(f"{where}: --gpus {ids} but {GPU} limit {gpus}")
            cpus = option(args, "--cpus")
            if cpus is not None and "cpu" in limits and float(cpus) != quantity(limits["cpu"]):
                problems.append(f"{where}: --cpus {cpus} but cpu limit {limits['cpu']}")
    for obj in objects:
        if obj["kind"] != "RayCluster":
            continue
        groups = [obj["spec"]["headGroupSpec"], *obj["spec"].get("workerGroupSpecs", [])]
        for group in groups:
            limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
            params = group["rayStartParams"]
            name = group.get("groupName", "head")
            if int(params.get("num-gpus", 0)) != int(limits.get(GPU, 0)):
                problems.append(f"ray group {name}: num-gpus differs from its {GPU} limit")
            if name != "head" and float(params.get("num-cpus", -1)) != quantity(limits["cpu"]):
                problems.append(f"ray group {name}: num-cpus differs from its cpu limit")
    return problems


def secret_problems(objects: list[Obj]) -> list[str]:
    """The Secret is the user's: referenced by every container, shipped by none, and none of its
    keys given a value in the manifests."""
    problems = [
        f"Secret/{o['metadata']['name']} is shipped" for o in objects if o["kind"] == "Secret"
    ]
    for where, _, container in containers(objects):
        refs = [e["secretRef"] for e in container.get("envFrom", []) if "secretRef" in e]
        if not any(ref["name"] == SECRET and not ref.get("optional") for ref in refs):
            problems.append(f"{where}: does not read the Secret {SECRET}")
        for item in container.get("env", []):
            if item["name"] in SECRET_KEYS:
                problems.append(f"{where}: sets {item['name']}, a key of the Secret")
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] != SECRET:
                problems.append(f"{where}: reads another Secret ({ref['name']})")
    return problems


def probe_problems(objects: list[Obj]) -> list[str]:
    """Long-running containers have readiness and liveness probes; the API's are its real health
    routes on its port, the workers' run `tuner worker-alive`; every `tuner` command parses."""
    health = {route.path for route in _health_routes()}
    problems = []
    for where, pod, container in containers(objects):
        args = argv(container)
        if args and (problem := cli_problem(args)):
            problems.append(f"{where}: {problem}")
        probes = {kind: container.get(kind) for kind in ("readinessProbe", "livenessProbe")}
        probes["startupProbe"] = container.get("startupProbe")
        for kind, probe in probes.items():
            command = (probe or {}).get("exec", {}).get("command")
            if command and (problem := cli_problem(command)):
                problems.append(f"{where} {kind}: {problem}")
            port = (probe or {}).get("httpGet", {}).get("port")
            ports = {p.get("name") for p in container.get("ports", [])}
            ports |= {p["containerPort"] for p in container.get("ports", [])}
            if port is not None and port not in ports and not is_ray_node(where):
                problems.append(f"{where} {kind}: port {port} is not a container port")
        if pod.get("restartPolicy") in ("Never", "OnFailure"):
            continue  # a Job's pod
        problems += [
            f"{where}: no {kind}"
            for kind in ("readinessProbe", "livenessProbe")
            if probes[kind] is None
        ]
        if args[:2] == ["tuner", "serve"]:
            paths = {k: (p or {}).get("httpGet", {}).get("path") for k, p in probes.items()}
            if paths["readinessProbe"] != "/readyz" or paths["livenessProbe"] != "/healthz":
                problems.append(f"{where}: probes {paths}, not /readyz and /healthz")
            problems += [
                f"{where}: the API has no route {path}"
                for path in paths.values()
                if path and path not in health
            ]
        if args[:2] == ["tuner", "worker"]:
            command = (probes["livenessProbe"] or {}).get("exec", {}).get("command", [])
            if command[:2] != ["tuner", "worker-alive"]:
                problems.append(f"{where}: the liveness probe is not `tuner worker-alive`")
    return problems


def _health_routes() -> list[Any]:
    from api.routes.health import router

    return list(router.routes)


def registry_problems(objects: list[Obj], tmp: Path) -> list[str]:
    """The registry ConfigMap parses as a registry, runs the image's bundled trainers, and is
    mounted (as a dir, so that it follows changes) where TUNER_TRAINERS_FILE points."""
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    problems = []
    for where, pod, container in containers(objects):
        if argv(container)[:3] == ["tuner", "db", "upgrade"]:
            continue  # migrations read no registry
        path = env(container).get("TUNER_TRAINERS_FILE")
        if path is None:
            problems.append(f"{where}: no TUNER_TRAINERS_FILE")
            continue
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = [
            m
            for m in container.get("volumeMounts", [])
            if m["mountPath"] == str(PurePosixPath(path).parent)
            and "configMap" in volumes.get(m["name"], {})
            and "subPath" not in m
        ]
        if len(mounts) != 1:
            problems.append(f"{where}: no ConfigMap mounted as the dir of {path}")
            continue
        configmap = configmaps.get(volumes[mounts[0]["name"]]["configMap"]["name"])
        if configmap is None or PurePosixPath(path).name not in configmap.get("data", {}):
            problems.append(f"{where}: the mounted ConfigMap has no {PurePosixPath(path).name}")
            continue
        registry_file = tmp / f"{len(problems)}-{where.replace('/', '_')}" / "trainers.yaml"
        registry_file.parent.mkdir(parents=True)
        registry_file.write_text(configmap["data"][PurePosixPath(path).name])
        registry = TrainerRegistry.from_file(registry_file, missing_ok=False)
        bundled = TrainerRegistry.from_file(ROOT / "trainers.yaml", missing_ok=False)
        if registry.names() != bundled.names():
            problems.append(f"{where}: trainers {registry.names()}, bundled {bundled.names()}")
        for name in registry.names():
            trainer = registry.get(name)
            if str(trainer.working_dir) != TRAINERS_DIR:
                problems.append(f"{where}: {name} runs in {trainer.working_dir}")
            if name in bundled and trainer.module != bundled.get(name).module:
                problems.append(f"{where}: {name} runs {trainer.module}")
    return problems


def image_problems(objects: list[Obj]) -> list[str]:
    """One tuner version: every container runs one of the tuner's images, all with one tag (not
    `latest`); the API and the migrations the api image, trials the worker images."""
    problems, tags = [], set()
    for where, _, container in containers(objects):
        name, tag = _split_image(container["image"])
        image = name.rsplit("/", 1)[-1]
        tags.add(tag)
        if image not in IMAGES or tag in (None, "latest"):
            problems.append(f"{where}: image {container['image']}")
        gpus = int(container.get("resources", {}).get("limits", {}).get(GPU, 0))
        wanted = "estimator-tuner-api"
        if runs_trials(where, container):
            wanted = "estimator-tuner-worker-gpu" if gpus else "estimator-tuner-worker"
        if image != wanted:
            problems.append(f"{where}: runs {image}, not {wanted}")
    if len(tags) > 1:
        problems.append(f"several tags: {sorted(t or '' for t in tags)}")
    return problems


def disruption_problems(objects: list[Obj]) -> list[str]:
    """Each Deployment and each Ray worker group has a PodDisruptionBudget that selects its pods,
    and each Service selects the API's pods on a port they have."""
    budgets = [
        o["spec"]["selector"]["matchLabels"] for o in objects if o["kind"] == "PodDisruptionBudget"
    ]
    problems = []
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj["kind"] == "Deployment":
            labels = obj["spec"]["template"]["metadata"]["labels"]
            if not obj["spec"]["selector"]["matchLabels"].items() <= labels.items():
                problems.append(f"Deployment/{name}: its selector does not select its pods")
            if not any(b.items() <= labels.items() for b in budgets):
                problems.append(f"Deployment/{name}: no PodDisruptionBudget")
        if obj["kind"] == "RayCluster":
            # KubeRay labels its worker pods with these.
            labels = {"ray.io/cluster": name, "ray.io/node-type": "worker"}
            if not any(b.items() <= labels.items() for b in budgets):
                problems.append(f"RayCluster/{name}: no PodDisruptionBudget for its workers")
        if obj["kind"] == "Service":
            selected = [
                c
                for o in objects
                if o["kind"] == "Deployment"
                and obj["spec"]["selector"].items()
                <= o["spec"]["template"]["metadata"]["labels"].items()
                for c in o["spec"]["template"]["spec"]["containers"]
            ]
            ports = {p.get("name") for c in selected for p in c.get("ports", [])}
            if not selected or any(p["targetPort"] not in ports for p in obj["spec"]["ports"]):
                problems.append(f"Service/{name}: selects no pod with its target ports")
    return problems


_PROBES = ("readinessProbe", "livenessProbe")


def kuberay_problems(objects: list[Obj]) -> list[str]:
    """The workers are Ray drivers of the RayCluster, which runs trials on GPU and CPU groups."""
    clusters = [o for o in objects if o["kind"] == "RayCluster"]
    if len(clusters) != 1:
        return [f"{len(clusters)} RayClusters"]
    cluster = clusters[0]
    name = cluster["metadata"]["name"]
    problems = []
    drivers = [
        (where, c) for where, _, c in containers(objects) if argv(c)[:2] == ["tuner", "worker"]
    ]
    if not drivers:
        problems.append("no tuner worker")
    for where, container in drivers:
        args = argv(container)
        if option(args, "--executor") != "ray":
            problems.append(f"{where}: not --executor ray: {args}")
        address = f"ray://{name}-head-svc:{RAY_CLIENT_PORT}"
        if option(args, "--ray-address") != address:
            problems.append(f"{where}: --ray-address is not {address}")
        if option(args, "--gpus") is not None or GPU in container["resources"].get("limits", {}):
            problems.append(f"{where}: a Ray driver holds GPUs (the Ray nodes have them)")
    head = cluster["spec"]["headGroupSpec"]
    if head["rayStartParams"].get("num-cpus") != "0":
        problems.append("the Ray head runs trials (num-cpus is not 0)")
    head_ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    if RAY_CLIENT_PORT not in head_ports:
        problems.append(f"the Ray head does not expose the Ray Client port {RAY_CLIENT_PORT}")
    head_probes = [head["template"]["spec"]["containers"][0].get(k) for k in _PROBES]
    if any(p is None or p["tcpSocket"]["port"] not in head_ports for p in head_probes):
        problems.append("the Ray head's probes do not check its ports")
    groups = cluster["spec"].get("workerGroupSpecs", [])
    for group in groups:
        raylet = int(group["rayStartParams"].get("node-manager-port", -1))
        container = group["template"]["spec"]["containers"][0]
        probes = [container.get(kind) for kind in _PROBES]
        if any(p is None or p["tcpSocket"]["port"] != raylet for p in probes):
            problems.append(f"group {group['groupName']}: probes not on its raylet's port")
    gpu_groups = [
        g for g in groups if GPU in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    if not gpu_groups or len(gpu_groups) == len(groups):
        problems.append("the RayCluster needs a CPU and a GPU worker group")
    if any(o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-gpu") for o in objects):
        problems.append("GPU workers of their own beside the Ray cluster")
    return problems


CHECKS: dict[str, Callable[[list[Obj]], list[str]]] = {
    "schemas": schema_problems,
    "security": security_problems,
    "grace": grace_problems,
    "resources": resource_problems,
    "secret": secret_problems,
    "probes": probe_problems,
    "images": image_problems,
    "disruptions": disruption_problems,
}


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
@pytest.mark.parametrize("check", list(CHECKS))
def test_kustomization_passes_check(name: str, check: str) -> None:
    assert CHECKS[check](rendered(name)) == []


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_the_trainer_registry_is_mounted_where_every_process_reads_it(
    name: str, tmp_path: Path
) -> None:
    assert registry_problems(rendered(name), tmp_path) == []


def test_renderings_hold_what_the_docs_name() -> None:
    """The objects docs/deploy.md names, in each rendering, in the namespace."""
    base, kuberay = rendered("base"), rendered("kuberay")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in base}
    assert kinds == {
        ("ConfigMap", "tuner-trainers"),
        ("Job", "tuner-migrate"),
        ("Deployment", "tuner-api"),
        ("Service", "tuner-api"),
        ("PodDisruptionBudget", "tuner-api"),
        ("Deployment", "tuner-worker"),
        ("PodDisruptionBudget", "tuner-worker"),
        ("Deployment", "tuner-worker-gpu"),
        ("PodDisruptionBudget", "tuner-worker-gpu"),
    }
    assert {(o["kind"], o["metadata"]["name"]) for o in kuberay} == kinds - {
        ("Deployment", "tuner-worker-gpu"),
        ("PodDisruptionBudget", "tuner-worker-gpu"),
    } | {("RayCluster", "tuner-ray"), ("PodDisruptionBudget", "tuner-ray-workers")}
    for obj in base + kuberay:
        assert obj["metadata"]["namespace"] == "tuner"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "estimator-tuner"


def test_the_api_serves_the_api_alone_and_the_job_migrates() -> None:
    objects = rendered("base")
    api = find(objects, "Deployment", "tuner-api")["spec"]["template"]["spec"]["containers"][0]
    assert argv(api) == ["tuner", "serve", "--host", "0.0.0.0", "--port", "8000", "--slots", "0"]
    job = find(objects, "Job", "tuner-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert argv(migrate) == ["tuner", "db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # `kubectl apply -k ... -l app.kubernetes.io/component=migrate` applies the Job alone.
    selected = [
        o["metadata"]["name"]
        for o in objects
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "migrate"
    ]
    assert selected == ["tuner-migrate"]


def test_base_workers_run_trials_in_their_pods_with_gpus_on_the_gpu_workers() -> None:
    objects = rendered("base")
    cpu = find(objects, "Deployment", "tuner-worker")["spec"]["template"]["spec"]
    gpu = find(objects, "Deployment", "tuner-worker-gpu")["spec"]["template"]["spec"]
    assert option(argv(cpu["containers"][0]), "--gpus") is None
    assert option(argv(gpu["containers"][0]), "--gpus") == "0,1"
    assert gpu["containers"][0]["resources"]["limits"][GPU] == 2
    assert "--executor" not in argv(cpu["containers"][0])
    for pod in (cpu, gpu):  # `tuner worker-alive` reads the file the worker touches
        (worker,) = pod["containers"]
        assert env(worker)["TUNER_WORK_DIR"] == "/var/lib/tuner/work"
        assert (PurePosixPath("/var/lib/tuner/work") / ALIVE_FILE).name == "worker.alive"


def test_the_kuberay_overlay_makes_the_workers_ray_drivers() -> None:
    assert kuberay_problems(rendered("kuberay")) == []


def test_the_raycluster_has_kuberays_structure() -> None:
    assert raycluster_problems(find(rendered("kuberay"), "RayCluster", "tuner-ray")) == []


def test_the_ray_nodes_run_the_drivers_image_and_settings() -> None:
    objects = rendered("kuberay")
    driver = find(objects, "Deployment", "tuner-worker")["spec"]["template"]["spec"]
    (driver_container,) = driver["containers"]
    nodes = [(w, c) for w, _, c in containers(objects) if is_ray_node(w)]
    assert len(nodes) == 3  # the head, the CPU group, the GPU group
    for where, node in nodes:
        image = driver_container["image"]
        if GPU in node["resources"]["limits"]:
            image = image.replace("estimator-tuner-worker:", "estimator-tuner-worker-gpu:")
        assert node["image"] == image, where
        # The trial's supervisor on the node reads what the drivers read.
        assert env(node).items() >= env(driver_container).items(), where
        assert node["envFrom"] == driver_container["envFrom"], where


def test_the_ray_cluster_runs_the_ray_of_the_tuners_ray_extra() -> None:
    """The drivers (the worker image, with the `ray` extra) and the nodes run one Ray."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (pin,) = [r for r in extras["ray"] if re.match(r"ray\b", r)]
    version = re.fullmatch(r"ray==(\d+\.\d+)\.\*", pin)
    assert version, f"the ray extra pins {pin!r}, not ray==X.Y.*"
    cluster = find(rendered("kuberay"), "RayCluster", "tuner-ray")
    assert cluster["spec"]["rayVersion"].startswith(version.group(1) + ".")


def test_secret_keys_and_settings_are_real_and_documented() -> None:
    """The TUNER_* names the manifests set and the Secret's keys are settings of the tuner, and
    docs/deploy.md tells how to create that Secret with each key."""
    names = {k for k in SECRET_KEYS if k.startswith("TUNER_")}
    for name in KUSTOMIZATIONS:
        for _, _, container in containers(rendered(name)):
            names |= {k for k in env(container) if k.startswith("TUNER_")}
    fields = Settings.model_fields
    assert {n for n in names if n.removeprefix("TUNER_").lower() not in fields} == set()
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert f"kubectl -n tuner create secret generic {SECRET}" in docs
    assert [key for key in SECRET_KEYS if f"`{key}`" not in docs] == []


def test_the_images_user_is_the_one_the_manifests_run_as() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and set(users) == {f"{IMAGE_UID}:{IMAGE_UID}"}
    assert f"COPY examples {TRAINERS_DIR}/examples" in dockerfile


def test_the_arithmetic_in_the_comments_is_the_tuners() -> None:
    settings = Settings()
    fence = fence_after(settings.heartbeat_timeout, settings.stop_grace_seconds)
    assert (settings.heartbeat_timeout, settings.stop_grace_seconds, fence) == (60, 10, 40)
    assert (
        "fence_after     = max(60 / 2, 60 - (10 + 2 * 5))     = 40 s"
        in (KUBE / "base" / "worker.yaml").read_text()
    )


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_an_overlay_sets_every_image_by_its_name(name: str, tmp_path: Path) -> None:
    """What docs/deploy.md tells: an overlay of one's own points the images at a registry
    and a new tag, for the drivers and the Ray nodes alike."""
    base = Path(os.path.relpath(KUSTOMIZATIONS[name], tmp_path))
    images = [
        {"name": image, "newName": f"registry.example.com/team/{image}", "newTag": "0.2.0"}
        for image in IMAGES
    ]
    kustomization = {"resources": [str(base)], "images": images}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    _, objects = render(tmp_path)
    found = {container["image"] for _, _, container in containers(objects)}
    # Both hold the three images: base its GPU workers, kuberay its Ray GPU group.
    assert found == {f"registry.example.com/team/{image}:0.2.0" for image in IMAGES}
    assert image_problems(objects) == []


# -- the checks notice what they check -------------------------------------------------------


def _containers_named(objects: list[Obj], kind: str, name: str) -> list[Obj]:
    obj = find(objects, kind, name)
    if kind == "RayCluster":
        return [t["spec"]["containers"][0] for t in _ray_templates(obj)]
    found: list[Obj] = obj["spec"]["template"]["spec"]["containers"]
    return found


def _pod(objects: list[Obj], name: str) -> Obj:
    pod: Obj = find(objects, "Deployment", name)["spec"]["template"]["spec"]
    return pod


def _as_root(objects: list[Obj]) -> None:
    _containers_named(objects, "Deployment", "tuner-api")[0]["securityContext"]["runAsUser"] = 0


def _writable_root(objects: list[Obj]) -> None:
    container = _containers_named(objects, "Job", "tuner-migrate")[0]
    del container["securityContext"]["readOnlyRootFilesystem"]


def _short_grace(objects: list[Obj]) -> None:
    _pod(objects, "tuner-worker")["terminationGracePeriodSeconds"] = 45


def _long_stop_grace(objects: list[Obj]) -> None:
    container = _pod(objects, "tuner-worker-gpu")["containers"][0]
    for item in container["env"]:
        if item["name"] == "TUNER_STOP_GRACE_SECONDS":
            item["value"] = "60"


def _one_gpu_less(objects: list[Obj]) -> None:
    _pod(objects, "tuner-worker-gpu")["containers"][0]["resources"]["limits"][GPU] = 1


def _more_cpus_than_the_limit(objects: list[Obj]) -> None:
    _pod(objects, "tuner-worker")["containers"][0]["command"][-1] = "8"


def _shipped_secret(objects: list[Obj]) -> None:
    objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "data": {}})


def _database_url_in_the_manifest(objects: list[Obj]) -> None:
    container = _pod(objects, "tuner-worker")["containers"][0]
    container["env"].append({"name": "TUNER_DATABASE_URL", "value": "postgresql://u:p@db/t"})


def _no_secret(objects: list[Obj]) -> None:
    del _containers_named(objects, "Job", "tuner-migrate")[0]["envFrom"]


def _wrong_readiness_path(objects: list[Obj]) -> None:
    probe = _containers_named(objects, "Deployment", "tuner-api")[0]["readinessProbe"]
    probe["httpGet"]["path"] = "/ready"


def _no_liveness(objects: list[Obj]) -> None:
    del _pod(objects, "tuner-worker")["containers"][0]["livenessProbe"]


def _unknown_cli_option(objects: list[Obj]) -> None:
    _pod(objects, "tuner-worker")["containers"][0]["command"].append("--slot=2")


def _latest_tag(objects: list[Obj]) -> None:
    container = _containers_named(objects, "Deployment", "tuner-worker")[0]
    container["image"] = container["image"].rsplit(":", 1)[0] + ":latest"


def _api_image_for_workers(objects: list[Obj]) -> None:
    api = _containers_named(objects, "Deployment", "tuner-api")[0]
    _containers_named(objects, "Deployment", "tuner-worker")[0]["image"] = api["image"]


def _no_worker_budget(objects: list[Obj]) -> None:
    objects.remove(find(objects, "PodDisruptionBudget", "tuner-worker"))


def _misspelled_field(objects: list[Obj]) -> None:
    _pod(objects, "tuner-api")["containers"][0]["readinesProbe"] = {}


def _string_replicas(objects: list[Obj]) -> None:
    find(objects, "Deployment", "tuner-api")["spec"]["replicas"] = "2"


BREAKAGES = [
    ("base", "security", _as_root),
    ("base", "security", _writable_root),
    ("base", "grace", _short_grace),
    ("base", "grace", _long_stop_grace),
    ("base", "resources", _one_gpu_less),
    ("base", "resources", _more_cpus_than_the_limit),
    ("base", "secret", _shipped_secret),
    ("base", "secret", _database_url_in_the_manifest),
    ("base", "secret", _no_secret),
    ("base", "probes", _wrong_readiness_path),
    ("base", "probes", _no_liveness),
    ("base", "probes", _unknown_cli_option),
    ("base", "images", _latest_tag),
    ("base", "images", _api_image_for_workers),
    ("base", "disruptions", _no_worker_budget),
    ("base", "schemas", _misspelled_field),
    ("base", "schemas", _string_replicas),
]


@pytest.mark.parametrize(
    ("name", "check", "breakage"), BREAKAGES, ids=[b[2].__name__.strip("_") for b in BREAKAGES]
)
def test_a_check_notices_a_broken_manifest(
    name: str, check: str, breakage: Callable[[list[Obj]], None]
) -> None:
    objects = rendered(name)
    assert CHECKS[check](objects) == []
    breakage(objects)
    assert CHECKS[check](objects) != []


def _ray(objects: list[Obj]) -> Obj:
    return find(objects, "RayCluster", "tuner-ray")


def _no_executor(objects: list[Obj]) -> None:
    command = _pod(objects, "tuner-worker")["containers"][0]["command"]
    del command[command.index("--executor") : command.index("--executor") + 2]


def _other_head_service(objects: list[Obj]) -> None:
    command = _pod(objects, "tuner-worker")["containers"][0]["command"]
    command[command.index("--ray-address") + 1] = "ray://ray-head:10001"


def _head_runs_trials(objects: list[Obj]) -> None:
    del _ray(objects)["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"]


def _integer_ray_param(objects: list[Obj]) -> None:
    _ray(objects)["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-cpus"] = 4


def _no_group_name(objects: list[Obj]) -> None:
    del _ray(objects)["spec"]["workerGroupSpecs"][1]["groupName"]


def _unknown_group_field(objects: list[Obj]) -> None:
    _ray(objects)["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3


def _raylet_port_moved(objects: list[Obj]) -> None:
    _ray(objects)["spec"]["workerGroupSpecs"][0]["rayStartParams"]["node-manager-port"] = "6390"


def _ray_gpus_differ(objects: list[Obj]) -> None:
    _ray(objects)["spec"]["workerGroupSpecs"][1]["rayStartParams"]["num-gpus"] = "2"


def _ray_node_as_root(objects: list[Obj]) -> None:
    _ray(objects)["spec"]["workerGroupSpecs"][1]["template"]["spec"]["securityContext"][
        "runAsUser"
    ] = 0


def _ray_node_short_grace(objects: list[Obj]) -> None:
    _ray(objects)["spec"]["headGroupSpec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30


def _ray_template_typo(objects: list[Obj]) -> None:
    _ray(objects)["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imag"] = "x"


RAY_CHECKS: dict[str, Callable[[list[Obj]], list[str]]] = {
    **CHECKS,
    "kuberay": kuberay_problems,
    "raycluster": lambda objects: raycluster_problems(_ray(objects)),
}
RAY_BREAKAGES = [
    ("kuberay", _no_executor),
    ("kuberay", _other_head_service),
    ("kuberay", _head_runs_trials),
    ("kuberay", _raylet_port_moved),
    ("raycluster", _integer_ray_param),
    ("raycluster", _no_group_name),
    ("raycluster", _unknown_group_field),
    ("resources", _ray_gpus_differ),
    ("security", _ray_node_as_root),
    ("grace", _ray_node_short_grace),
    ("schemas", _ray_template_typo),
]


@pytest.mark.parametrize(
    ("check", "breakage"), RAY_BREAKAGES, ids=[b[1].__name__.strip("_") for b in RAY_BREAKAGES]
)
def test_a_check_notices_a_broken_kuberay_overlay(
    check: str, breakage: Callable[[list[Obj]], None]
) -> None:
    objects = rendered("kuberay")
    assert RAY_CHECKS[check](objects) == []
    breakage(objects)
    assert RAY_CHECKS[check](objects) != []


def test_the_small_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(UnsupportedKustomization, match="configMapGenerator"):
        render_kustomization(tmp_path)
