"""`retention: {keepBestTrials: K}`: which finished trials keep their checkpoint and exports,
and why the others do not. A pure function of the trials' states and ranks.

- One objective: the K best COMPLETED trials by the leaderboard's rank key
  (`objective_rank`, ties by trial number); the best trial is always among them (K >= 1).
- Several objectives: the K best COMPLETED trials by each objective (feasible ones before
  infeasible ones), and every member of the Pareto front, whatever K.
- A finished trial that is not COMPLETED (FAILED, PRUNED, STOPPED) never ranks, and a
  COMPLETED one without a finite value for every objective does not either: their kept
  artifacts go.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from tuner.domain.entities import FinishedTrial, RankedTrial
from tuner.domain.spec import Goal, StudySpec


@dataclass(frozen=True)
class Verdict:
    trial: FinishedTrial
    keep: bool
    #: Its rank(s), front membership or state, in words.
    reason: str


def policy_name(keep_best_trials: int) -> str:
    return f"keepBestTrials={keep_best_trials}"


def judge(
    spec: StudySpec,
    keep_best_trials: int,
    trials: Sequence[FinishedTrial],
    ranked: Sequence[RankedTrial] = (),
    front: Collection[int] = (),
) -> list[Verdict]:
    """A verdict for each finished trial. `ranked` (each COMPLETED trial's objectives at its
    ranking step) and `front` (run ids on the Pareto front) matter with several objectives."""
    if spec.multi_objective:
        return _judge_several(spec, keep_best_trials, trials, ranked, set(front))
    return _judge_one(spec, keep_best_trials, trials)


def _judge_one(spec: StudySpec, k: int, trials: Sequence[FinishedTrial]) -> list[Verdict]:
    ranking = sorted(
        (t for t in trials if _ranks(t) and t.rank is not None and math.isfinite(t.rank)),
        key=lambda t: (t.rank, t.number),
    )
    position = {t.run_id: i + 1 for i, t in enumerate(ranking)}
    verdicts = []
    for trial in trials:
        if trial.run_id not in position:
            verdicts.append(Verdict(trial, False, _unranked(trial)))
            continue
        at = position[trial.run_id]
        where = "within" if at <= k else "outside"
        reason = (
            f"rank {at} of {len(ranking)} COMPLETED by {spec.metric_tag} ({spec.goal.value}), "
            f"{where} the best {k}"
        )
        verdicts.append(Verdict(trial, at <= k, reason))
    return verdicts


def _judge_several(
    spec: StudySpec,
    k: int,
    trials: Sequence[FinishedTrial],
    ranked: Sequence[RankedTrial],
    front: set[int],
) -> list[Verdict]:
    ranked_ids = {r.run_id for r in ranked}
    positions: dict[str, dict[int, int]] = {}
    for objective in spec.objectives:
        sign = 1.0 if objective.goal is Goal.MINIMIZE else -1.0
        order = sorted(
            ranked,
            key=lambda r, m=objective.metric, s=sign: (  # type: ignore[misc]
                not r.feasible,
                s * r.objectives[m],
                r.number,
            ),
        )
        positions[objective.metric] = {r.run_id: i + 1 for i, r in enumerate(order)}
    verdicts = []
    for trial in trials:
        if not _ranks(trial) or trial.run_id not in ranked_ids:
            verdicts.append(Verdict(trial, False, _unranked(trial, several=True)))
            continue
        ranks = ", ".join(
            f"{positions[m][trial.run_id]} by {m}" for m in (o.metric for o in spec.objectives)
        )
        best_somewhere = any(p[trial.run_id] <= k for p in positions.values())
        on_front = trial.run_id in front
        within = "within" if best_somewhere else "outside"
        where = "on the Pareto front" if on_front else "not on the Pareto front"
        reason = (
            f"rank {ranks} of {len(ranked)} COMPLETED, {within} the best {k} by each "
            f"objective, {where}"
        )
        verdicts.append(Verdict(trial, best_somewhere or on_front, reason))
    return verdicts


def _ranks(trial: FinishedTrial) -> bool:
    return trial.state == "COMPLETED"


def _unranked(trial: FinishedTrial, *, several: bool = False) -> str:
    if trial.state != "COMPLETED":
        return f"{trial.state}: only COMPLETED trials rank"
    what = "every objective" if several else "a finite objective"
    return f"COMPLETED without {what} at its ranking step: it does not rank"
