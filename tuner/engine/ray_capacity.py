"""What a Ray cluster can take: which trials it can ever run, and whether it has room now.

Read from Ray (`ray.nodes()`, `ray.available_resources()`), cached briefly: a manager asks at
every claim, and Ray's control store need not answer that often. A cluster that does not
answer takes no trial meanwhile (said once per outage).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from tuner.domain.config import Settings
from tuner.domain.errors import first_line
from tuner.trial.resources import Need

logger = logging.getLogger(__name__)

#: Seconds between reads of the cluster's nodes (feasibility) and of its free resources.
NODES_EVERY = 5.0
FREE_EVERY = 0.5


def ray_cpus(need: Need) -> float:
    """The CPUs a trial asks Ray for: `cpusPerTrial`, 1 without it (Ray's default for a task)."""
    return float(need.cpus) if need.cpus is not None else 1.0


class ClusterCapacity:
    """The cluster's nodes and free resources, as the claims of one manager need them."""

    def __init__(self, ray: Any, settings: Settings) -> None:
        self.ray = ray
        self.settings = settings
        self._nodes: tuple[float, list[dict[str, Any]]] = (0.0, [])
        #: Ray's free resources, as last read (read again when a task ends, or after a while).
        self._free: tuple[float, dict[str, float]] = (0.0, {})
        self._unreachable_said = False

    def alive_nodes(self, *, fresh: bool = False) -> list[dict[str, Any]]:
        read_at, nodes = self._nodes
        now = time.monotonic()
        if fresh or now - read_at >= NODES_EVERY:
            nodes = [n for n in self.ray.nodes() if n.get("Alive")]
            self._nodes = (now, nodes)
        return nodes

    def forget_free(self) -> None:
        """Tasks ended or were sent: the free resources are read again at the next claim."""
        self._free = (0.0, {})

    def free(self) -> dict[str, float] | None:
        """The cluster's free resources (None: it does not answer now)."""
        now = time.monotonic()
        read_at, free = self._free
        if now - read_at >= FREE_EVERY:
            try:
                free = self.ray.available_resources()
            except Exception as exc:
                self._unreachable(exc)
                return None
            self._unreachable_said = False
            self._free = (now, free)
        return free

    def _unreachable(self, exc: Exception) -> None:
        if not self._unreachable_said:
            self._unreachable_said = True
            logger.warning("the Ray cluster did not answer (%s); no trial is sent", first_line(exc))

    def refusal(self, need: Need) -> str | None:
        """Why no node of the cluster can ever run such a trial (None: one can, or the
        cluster does not answer now: `free` holds the claims meanwhile)."""
        cpus, gpus = ray_cpus(need), float(need.gpus)
        try:
            nodes = self.alive_nodes()
        except Exception as exc:
            self._unreachable(exc)
            return None
        if len(nodes) > 1 and not self.settings.artifact_url:
            return (
                f"the Ray cluster now has {len(nodes)} nodes and the artifact root is this "
                "machine's dir: set TUNER_ARTIFACT_ROOT to an object store (s3://, gs://, az://)"
            )
        for node in nodes:
            resources = node.get("Resources", {})
            if resources.get("CPU", 0) >= cpus and resources.get("GPU", 0) >= gpus:
                return None
        most_cpus = max((n.get("Resources", {}).get("CPU", 0) for n in nodes), default=0)
        most_gpus = max((n.get("Resources", {}).get("GPU", 0) for n in nodes), default=0)
        return (
            f"needs {cpus:g} CPU(s) and {gpus:g} GPU(s) per trial, more than any node of the "
            f"Ray cluster has (the largest: {most_cpus:g} CPU(s), {most_gpus:g} GPU(s)); "
            "it waits for a node that can take it"
        )


def fits(need: Need, free: dict[str, float], unplaced: Iterable[Need] = ()) -> bool:
    """Whether `free` resources, less those of the tasks sent and not yet placed, take `need`."""
    cpus = float(free.get("CPU", 0.0))
    gpus = float(free.get("GPU", 0.0))
    for other in unplaced:
        cpus -= ray_cpus(other)
        gpus -= other.gpus
    return cpus >= ray_cpus(need) - 1e-9 and gpus >= need.gpus - 1e-9
