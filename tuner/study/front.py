"""A study's Pareto front: its non-dominated feasible COMPLETED trials, with the checkpoint and
exports kept for each one's ranking step, and what `best` says of a study that has one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement

from tuner.domain.entities import ParetoFront, ParetoMember, Study
from tuner.domain.errors import SeveralObjectivesError
from tuner.domain.spec import Goal
from tuner.persistence import repository as repo
from tuner.persistence.kept import checkpoints, exports
from tuner.persistence.ranked import front_candidates
from tuner.persistence.trial_queries import count_matching, matching, parse_query

if TYPE_CHECKING:  # operations asks this module why `best` has no answer
    from tuner.study.operations import Backend


def pareto_front(
    backend: Backend,
    ref: str | int,
    *,
    states: Sequence[str] = (),
    filters: Sequence[str] = (),
) -> ParetoFront:
    """The front, in order of the first objective (best first); a study with one objective
    has its best trial(s) as its front. With `states` or `filters` (the leaderboard's), the
    front of the trials they keep: what a user comparing a subset of the study asks for."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        matched: int | None = None
        selected: list[ColumnElement[bool]] = []
        if states or filters:
            query = parse_query(study.spec, states=states, filters=filters)
            selected = matching(session, study, query)
            matched = count_matching(session, selected)
        candidates = front_candidates(session, study, selected)
        goals = [o.goal for o in study.spec.objectives]
        metrics = [o.metric for o in study.spec.objectives]
        on_front = list(candidates.trials)
        first, sign = metrics[0], (1.0 if goals[0] is Goal.MINIMIZE else -1.0)
        on_front.sort(key=lambda t: (sign * t.objectives[first], t.number))
        members = []
        for trial in on_front:
            kept = [c for c in checkpoints(session, trial.run_id) if c.step == trial.step]
            members.append(
                ParetoMember(
                    trial=trial,
                    checkpoint=kept[-1] if kept else None,
                    exports=[e for e in exports(session, trial.run_id) if e.step == trial.step],
                )
            )
    return ParetoFront(
        study=study,
        members=members,
        ranked=candidates.ranked,
        infeasible=candidates.infeasible,
        matched=matched,
    )


def several_objectives_error(backend: Backend, study: Study) -> SeveralObjectivesError:
    """Why `best` has no single answer on this study, and how to pick from its front."""
    front = pareto_front(backend, study.id)
    goals = ", ".join(f"{o.metric} ({o.goal.value})" for o in study.spec.objectives)
    numbers = ", ".join(f"#{m.trial.number}" for m in front.members[:20])
    more = f" and {len(front.members) - 20} more" if len(front.members) > 20 else ""
    if front.members:
        found = f"its Pareto front has {len(front.members)} trial(s): {numbers}{more}"
    else:
        found = "no trial is on its Pareto front yet (none COMPLETED with every objective)"
    return SeveralObjectivesError(
        f"study {study.name!r} has {len(study.spec.objectives)} objectives ({goals}): no one "
        f"trial is best, {found}. No member is better than another on every objective: "
        f"compare them with `tuner pareto {study.name}` (or GET "
        f"/api/v1/studies/{study.name}/pareto, or the study page's Pareto plot), then pull "
        f"the one you choose with `tuner pull {study.name} --trial N` (GET "
        f"/api/v1/studies/{study.name}/trials/N/model)"
    )
