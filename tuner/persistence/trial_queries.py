"""A study's trials sorted and filtered on the server, and one metric's history across trials.

Every sort key and filter is an SQL expression: nothing loads the study's rows into Python.
The objective sort reads its page from the (study_id, objective_rank, number) index; any other
key sorts the filtered trials as narrow rows and reads only the page's rows in full. A value of
another table (a metric, the best step) is one unique-index probe per trial of the study, so a
page costs the study's size, never the database's. Trials without the sort value (no objective,
no best step, a parameter or metric never written) come last in either direction.

`metric:<tag>` (to sort or filter) means the tag's value at the trial's best step, the step
whose checkpoint and exports are kept: the model a user would take from the trial.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    and_,
    extract,
    func,
    select,
)
from sqlalchemy.orm import Session, aliased

from tuner.domain.entities import LeaderboardRow, MetricHistory, MetricPoint, Study
from tuner.domain.errors import QueryError
from tuner.domain.spec import Goal, ParameterSpec, ParamType, StudySpec
from tuner.persistence.counts import counted
from tuner.persistence.models import EvalMetricRow, EvalStepRow, TrialRunRow, TrialSortValueRow

#: Sort keys without a name; `metric:<tag>` and `param:<name>` come on top.
PLAIN_SORT_KEYS = (
    "objective",
    "number",
    "startedAt",
    "endedAt",
    "duration",
    "state",
    "bestStep",
    "lastStep",
)
SORT_KEYS_TEXT = ", ".join([*PLAIN_SORT_KEYS, "objective:<metric>", "metric:<tag>", "param:<name>"])
#: Longest operators first: `<=` must not be read as `<` followed by a value `=...`.
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "=": operator.eq,
}
OPERATORS_TEXT = ", ".join(sorted(OPERATORS, key=len))
MAX_FILTERS = 20
MAX_EXPRESSION = 500
FILTER_SYNTAX = (
    "expected <subject><operator><value>: subject metric:<tag>, param:<name> or objective, "
    f"operator one of {OPERATORS_TEXT} (e.g. metric:rmse<0.5, param:optimizer=adam)"
)
_FILTER = re.compile(r"\s*(?P<subject>[^<>=!]+?)\s*(?P<op><=|>=|!=|<|>|=)\s*(?P<value>.*?)\s*")
#: Points per metric-history response, all trials together (a bound on its size).
MAX_HISTORY_POINTS = 100_000


@dataclass(frozen=True)
class SortKey:
    #: One of `PLAIN_SORT_KEYS`, or "metric" / "objectiveMetric" / "param" with `name`.
    key: str = "objective"
    name: str | None = None
    descending: bool = False


@dataclass(frozen=True)
class Filter:
    #: "metric", "param" or "objective".
    subject: str
    name: str | None
    op: str
    value: float | str


@dataclass(frozen=True)
class TrialQuery:
    """What to list: the default is every trial, best objective first."""

    sort: SortKey = SortKey()
    states: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()


# -- parsing -------------------------------------------------------------------------------------


def parse_query(
    spec: StudySpec,
    *,
    sort: str | None = None,
    states: Sequence[str] = (),
    filters: Sequence[str] = (),
) -> TrialQuery:
    """A query from request parameters; every problem at once as a `QueryError`."""
    problems: list[tuple[str, str]] = []
    key = SortKey()
    if sort is not None:
        parsed_sort = parse_sort(sort, spec)
        if isinstance(parsed_sort, str):
            problems.append(("sort", parsed_sort))
        else:
            key = parsed_sort
    if len(filters) > MAX_FILTERS:
        problems.append(("filter", f"at most {MAX_FILTERS} filters, got {len(filters)}"))
        filters = ()
    parsed: list[Filter] = []
    for text in filters:
        one = parse_filter(text, spec)
        if isinstance(one, str):
            problems.append(("filter", one))
        else:
            parsed.append(one)
    if problems:
        raise QueryError(problems)
    return TrialQuery(sort=key, states=tuple(dict.fromkeys(states)), filters=tuple(parsed))


def parse_sort(text: str, spec: StudySpec) -> SortKey | str:
    """A sort key, or the reason it is not one."""
    raw = text.strip()
    descending = raw.startswith("-")
    body = raw.removeprefix("-").strip()
    if body in PLAIN_SORT_KEYS:
        return SortKey(body, None, descending)
    subject, _, name = body.partition(":")
    if subject == "metric" and name.strip():
        return SortKey("metric", name.strip(), descending)
    if subject == "objective" and name.strip():
        metrics = [o.metric for o in spec.objectives]
        if name.strip() not in metrics:
            return f"{text!r}: the study's objectives are {', '.join(metrics)}"
        return SortKey("objectiveMetric", name.strip(), descending)
    if subject == "param" and name.strip():
        found = _param(spec, name.strip())
        if isinstance(found, str):
            return f"{text!r}: {found}"
        return SortKey("param", found.parameter_name, descending)
    return f"unknown sort key {text!r}: use one of {SORT_KEYS_TEXT}; '-' first for descending"


def parse_filter(text: str, spec: StudySpec) -> Filter | str:
    """A filter expression such as `metric:rmse<0.5`, or the reason it is not one."""
    if len(text) > MAX_EXPRESSION:
        return f"a filter expression is at most {MAX_EXPRESSION} characters"
    match = _FILTER.fullmatch(text)
    if match is None or not match["value"]:
        return f"{text!r}: {FILTER_SYNTAX}"
    subject, op, value = match["subject"], match["op"], match["value"]
    kind, _, name = subject.partition(":")
    name = name.strip()
    if subject == "objective":
        number = _finite(value)
        if number is None:
            return f"{text!r}: {value!r} is not a finite number"
        return Filter("objective", None, op, number)
    if kind == "metric" and name:
        number = _finite(value)
        if number is None:
            return f"{text!r}: {value!r} is not a finite number"
        return Filter("metric", name, op, number)
    if kind == "param" and name:
        param = _param(spec, name)
        if isinstance(param, str):
            return f"{text!r}: {param}"
        if param.type is ParamType.CATEGORICAL:
            if op not in ("=", "!="):
                return f"{text!r}: {name} is CATEGORICAL: use = or !="
            choices = param.categorical_values or []
            if value not in choices:
                return f"{text!r}: {value!r} is not a value of {name} ({', '.join(choices)})"
            return Filter("param", name, op, value)
        number = _finite(value)
        if number is None:
            return f"{text!r}: {value!r} is not a finite number"
        return Filter("param", name, op, number)
    return f"{text!r}: {FILTER_SYNTAX}"


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _param(spec: StudySpec, name: str) -> ParameterSpec | str:
    params = {p.parameter_name: p for p in spec.hyperparameters.all_params}
    if name in params:
        return params[name]
    return f"the study has no parameter {name!r} (its parameters: {', '.join(params)})"


# -- listing -------------------------------------------------------------------------------------


class _Expressions:
    """SQL for each sort key and filter subject.

    Params and metrics at the best step are sort values (`sort_values`): a page or a filter
    of them reads ranges of their index. The few other keys from another table (the best or
    last step, an objective of several) are correlated scalar subqueries, not joins: one probe
    of a unique index per trial, where a join lets PostgreSQL hash the whole metrics table
    (every study's) to sort one study's trials.
    """

    def __init__(self, session: Session, study: Study) -> None:
        self.sqlite = session.get_bind().dialect.name == "sqlite"
        self.spec = study.spec
        self.study_id = study.id

    def sort_key(self, key: SortKey) -> SQLColumnExpression[Any]:
        row = TrialRunRow
        if key.key == "objective":
            # The rank is already "smaller is better" in the goal's direction.
            return row.objective_rank
        if key.key == "number":
            return row.number
        if key.key == "startedAt":
            return row.started_at
        if key.key == "endedAt":
            return row.ended_at
        if key.key == "state":
            return row.state
        if key.key == "duration":
            if self.sqlite:
                return (func.julianday(row.ended_at) - func.julianday(row.started_at)) * 86400.0
            return extract("epoch", row.ended_at - row.started_at)
        if key.key == "bestStep":
            return (
                select(EvalStepRow.step)
                .where(EvalStepRow.id == row.best_step_id)
                .correlate(TrialRunRow)
                .scalar_subquery()
            )
        if key.key == "lastStep":
            return last_step_of_run()
        assert key.key == "objectiveMetric" and key.name is not None, key  # param, metric: no
        # Better first, like the objective sort: MAXIMIZE values are negated.
        value = metric_at_step(key.name, TrialRunRow.objective_step_id)
        goal = next(o.goal for o in self.spec.objectives if o.metric == key.name)
        return -value if goal is Goal.MAXIMIZE else value

    def condition(self, flt: Filter) -> ColumnElement[bool]:
        """The filter as SQL; a missing value (NULL) makes every comparison false, `!=` too.

        A param or metric filter is a range of the sort values' (study_id, key, value) index,
        which holds exactly the trials that have a value (no JSON parsed, no metric looked up
        per trial of the study).
        """
        if flt.subject == "objective":
            rank = TrialRunRow.objective_rank
            value: SQLColumnExpression[Any] = -rank if self.spec.goal is Goal.MAXIMIZE else rank
            condition: ColumnElement[bool] = OPERATORS[flt.op](value, flt.value)
            return condition
        return self.sort_value_condition(flt, TrialRunRow.id)

    def sort_value_condition(
        self, flt: Filter, run_id: SQLColumnExpression[int]
    ) -> ColumnElement[bool]:
        """A param or metric filter on the run whose id is `run_id`."""
        assert flt.subject in ("param", "metric") and flt.name is not None
        bound = flt.value
        if flt.subject == "param":
            param = self._param(flt.name)
            if param.type is ParamType.CATEGORICAL:  # = or != a listed value: its place
                bound = float((param.categorical_values or []).index(str(flt.value)))
        values = TrialSortValueRow
        within = select(values.run_id).where(
            values.study_id == self.study_id,
            values.key == f"{flt.subject}:{flt.name}",
            OPERATORS[flt.op](values.value, bound),
        )
        return run_id.in_(within)

    def _param(self, name: str) -> ParameterSpec:
        found = _param(self.spec, name)
        assert not isinstance(found, str), found
        return found


def metric_at_step(tag: str, step_id: Any) -> ColumnElement[float | None]:
    """The tag's value at the run's eval step `step_id` (a column of the run row)."""
    return (
        select(EvalMetricRow.value)
        .where(EvalMetricRow.eval_step_id == step_id, EvalMetricRow.tag == tag)
        .correlate(TrialRunRow)
        .scalar_subquery()
    )


def last_step_of_run() -> ColumnElement[int | None]:
    return (
        select(func.max(EvalStepRow.step))
        .where(EvalStepRow.run_id == TrialRunRow.id)
        .correlate(TrialRunRow)
        .scalar_subquery()
    )


def list_trials(
    session: Session,
    study: Study,
    query: TrialQuery | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[LeaderboardRow], int]:
    """One page of the study's trials as `query` sorts and filters them; and the filtered
    total. Ties go by trial number; trials without the sort value come last either way."""
    query = query or TrialQuery()
    sql = _Expressions(session, study)
    where = [TrialRunRow.study_id == study.id, TrialRunRow.number.is_not(None)]
    if query.states:
        where.append(TrialRunRow.state.in_(query.states))
    where += [sql.condition(f) for f in query.filters]
    total = counted(
        session,
        study,
        ("trials", query.states, query.filters),
        lambda: _count(session, where),
        reads_values=any(f.subject != "param" for f in query.filters),
    )
    if offset >= total:
        found: list[Any] = []
    elif query.sort.key in ("param", "metric"):
        found = _in_sort_value_order(session, study, sql, where, query, total, limit, offset)
    elif query.sort.key == "objective":
        key = sql.sort_key(query.sort)
        found = _in_index_order(session, study, key, where, query, total, limit, offset)
    else:
        key = sql.sort_key(query.sort)
        found = _sorted_narrow(session, study, key, where, query, limit, offset)
    last_values = _last_objectives(session, [run.id for run, *_ in found], study.spec.metric_tag)
    vectors = _ranking_vectors(session, study, [run for run, *_ in found])
    rows = [
        LeaderboardRow(
            number=int(run.number),
            state=run.state,
            params=json.loads(run.params_json),
            objective=None if value is None else float(value),
            best_step=best_step,
            last_step=last,
            started_at=_aware(run.started_at),
            ended_at=_aware(run.ended_at) if run.ended_at else None,
            failure_reason=run.failure_reason,
            last_objective=last_values.get(run.id),
            **vectors.get(run.id, {}),
        )
        for run, value, best_step, last in found
    ]
    return rows, total


def matching(session: Session, study: Study, query: TrialQuery) -> list[ColumnElement[bool]]:
    """The conditions selecting the study's trials that `query`'s states and filters keep (its
    sort aside): what the charts of the study page read, the same trials as the leaderboard."""
    sql = _Expressions(session, study)
    where = [TrialRunRow.study_id == study.id, TrialRunRow.number.is_not(None)]
    if query.states:
        where.append(TrialRunRow.state.in_(query.states))
    return where + [sql.condition(f) for f in query.filters]


def count_matching(session: Session, where: Sequence[ColumnElement[bool]]) -> int:
    """How many trial rows `where` selects."""
    return _count(session, where)


def _ranking_vectors(
    session: Session, study: Study, runs: Sequence[TrialRunRow]
) -> dict[int, dict[str, Any]]:
    """Each run's objectives (several) and feasibility (safety metrics) at its ranking step,
    in one read for the page; nothing for a study with one objective and no constraints."""
    spec = study.spec
    if not (spec.multi_objective or spec.constraints):
        return {}
    steps = {run.objective_step_id: run.id for run in runs if run.objective_step_id is not None}
    values: dict[int, dict[str, float | None]] = {run_id: {} for run_id in steps.values()}
    if steps:
        for step_id, tag, value in session.execute(
            select(EvalMetricRow.eval_step_id, EvalMetricRow.tag, EvalMetricRow.value).where(
                EvalMetricRow.eval_step_id.in_(list(steps)),
                EvalMetricRow.tag.in_(spec.ranked_metrics),
            )
        ):
            values[steps[step_id]][tag] = value
    out: dict[int, dict[str, Any]] = {}
    for run_id, metrics in values.items():
        feasible = None
        if spec.constraints:
            known = [metrics.get(c.metric_id) for c in spec.constraints]
            if all(v is not None for v in known):
                feasible = all(
                    c.violation(float(v or 0.0)) <= 0
                    for c, v in zip(spec.constraints, known, strict=True)
                )
        objectives = (
            {o.metric: metrics.get(o.metric) for o in spec.objectives}
            if spec.multi_objective
            else {}
        )
        out[run_id] = {"objectives": objectives, "feasible": feasible}
    return out


def _last_objectives(session: Session, run_ids: list[int], tag: str) -> dict[int, float | None]:
    """The objective tag's value at each run's latest step that has it: one pass over the page's
    values, newest first per run (no per-step subquery, which made PostgreSQL scan the metrics
    table once per step of a fresh, unanalyzed study)."""
    if not run_ids:
        return {}
    newest = func.row_number().over(
        partition_by=EvalStepRow.run_id, order_by=(EvalStepRow.step.desc(), EvalStepRow.id.desc())
    )
    ranked = (
        select(EvalStepRow.run_id, EvalMetricRow.value, newest.label("newest"))
        .join(EvalMetricRow, EvalMetricRow.eval_step_id == EvalStepRow.id)
        .where(EvalStepRow.run_id.in_(run_ids), EvalMetricRow.tag == tag)
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.run_id, ranked.c.value).where(ranked.c.newest == 1)
    ).all()
    return {int(run_id): None if value is None else float(value) for run_id, value in rows}


def _details(study: Study) -> Select[TrialRunRow, float | None, int, int | None]:
    """A trial row with what the page shows of it: objective value, best and last step."""
    objective = aliased(EvalMetricRow)
    best = aliased(EvalStepRow)
    return (
        select(TrialRunRow, objective.value, best.step, last_step_of_run())
        .select_from(TrialRunRow)
        .outerjoin(
            objective,
            and_(
                objective.eval_step_id == TrialRunRow.objective_step_id,
                objective.tag == study.spec.metric_tag,
            ),
        )
        .outerjoin(best, best.id == TrialRunRow.best_step_id)
    )


def _count(session: Session, where: Sequence[ColumnElement[bool]]) -> int:
    """How many trial rows match: `count(*)`, which an index holding the filtered columns
    answers alone (on PostgreSQL, `count(id)` made it read every row of the study: the id is
    in no index with the study)."""
    return int(session.scalar(select(func.count()).select_from(TrialRunRow).where(*where)) or 0)


def _in_index_order(
    session: Session,
    study: Study,
    key: SQLColumnExpression[Any],
    where: list[ColumnElement[bool]],
    query: TrialQuery,
    total: int,
    limit: int,
    offset: int,
) -> list[Any]:
    """The objective sort: ranked trials straight from the (study_id, objective_rank, number)
    index, then the unranked ones by number; a page reads its own rows, whatever the study's
    size (a descending page reads the index backwards).

    How many are ranked is only needed when a page runs past them: it is where the ranked
    rows ended on this page, or, for a page wholly past them, a count of its own.
    """
    page = _details(study).where(*where)
    order = key.desc() if query.sort.descending else key.asc()
    found: list[Any] = list(
        session.execute(
            page.where(key.is_not(None))
            .order_by(order, TrialRunRow.number)
            .limit(limit)
            .offset(offset)
        ).all()
    )
    if len(found) < limit and offset + len(found) < total:
        # Where the ranked rows ended on this page, or a count for a page wholly past them.
        keyed = offset + len(found) if found else _count(session, [*where, key.is_not(None)])
        found += session.execute(
            page.where(key.is_(None))
            .order_by(TrialRunRow.number)
            .limit(limit - len(found))
            .offset(max(0, offset - keyed))
        ).all()
    return found


def _in_sort_value_order(
    session: Session,
    study: Study,
    sql: _Expressions,
    where: list[ColumnElement[bool]],
    query: TrialQuery,
    total: int,
    limit: int,
    offset: int,
) -> list[Any]:
    """A param or metric sort: the trials that have a value, in the order of the
    (study_id, key, value, number) index of their sort values, then those without one by
    number; a page reads its own rows and the ones it skips, not the study's (equal values
    go by number, also in a descending sort: an incremental sort of each run of equals).
    """
    values = TrialSortValueRow
    assert query.sort.name is not None
    sort_key = f"{query.sort.key}:{query.sort.name}"
    order = values.value.desc() if query.sort.descending else values.value.asc()
    keyed = [values.study_id == study.id, values.key == sort_key]
    page = select(values.run_id).where(*keyed)
    if query.states or any(f.subject == "objective" for f in query.filters):
        page = page.join(TrialRunRow, TrialRunRow.id == values.run_id).where(*where)
    else:
        # Only attached trials have sort values, and param and metric filters are ranges of
        # the same index: the page is read from it alone, run rows untouched.
        page = page.where(*(sql.sort_value_condition(f, values.run_id) for f in query.filters))
    ids: list[int] = list(
        session.scalars(page.order_by(order, values.number).limit(limit).offset(offset))
    )
    if len(ids) < limit and offset + len(ids) < total:
        # Where the keyed rows ended on this page, or a count for a page wholly past them.
        before = (
            offset + len(ids)
            if ids
            else int(session.scalar(select(func.count()).select_from(page.subquery())) or 0)
        )
        has_value = (
            select(values.run_id)
            .where(values.run_id == TrialRunRow.id, values.key == sort_key)
            .exists()
        )
        ids += session.scalars(
            select(TrialRunRow.id)
            .where(*where, ~has_value)
            .order_by(TrialRunRow.number)
            .limit(limit - len(ids))
            .offset(max(0, offset - before))
        ).all()
    by_id = {
        row[0].id: row for row in session.execute(_details(study).where(TrialRunRow.id.in_(ids)))
    }
    return [by_id[i] for i in ids if i in by_id]


def _sorted_narrow(
    session: Session,
    study: Study,
    key: SQLColumnExpression[Any],
    where: list[ColumnElement[bool]],
    query: TrialQuery,
    limit: int,
    offset: int,
) -> list[Any]:
    """Any other key (a time, a duration, a state, a step): no index has its order, so the
    filtered trials are sorted as narrow rows (id, key, number) and only the page's rows are
    read in full: sorting whole rows would compute every trial's details first."""
    order = (key.desc() if query.sort.descending else key.asc()).nulls_last()
    ids = session.scalars(
        select(TrialRunRow.id)
        .where(*where)
        .order_by(order, TrialRunRow.number)
        .limit(limit)
        .offset(offset)
    ).all()
    by_id = {
        row[0].id: row for row in session.execute(_details(study).where(TrialRunRow.id.in_(ids)))
    }
    return [by_id[i] for i in ids if i in by_id]


# -- metric history ------------------------------------------------------------------------------


def metric_history(
    session: Session,
    study: Study,
    tag: str,
    *,
    eval_name: str | None = None,
    numbers: Sequence[int] | None = None,
    states: Sequence[str] = (),
    limit: int = 100,
    offset: int = 0,
    max_points: int = 1000,
) -> tuple[list[MetricHistory], int]:
    """One metric of a page of trials, by trial number; and how many trials the page is of.

    Pages are pages of the trials that `numbers` and `states` select, by number, and `total`
    counts those trials; a page lists the ones among them that wrote `tag` (in `eval_name` when
    given), so a tag no trial wrote is an empty list, not an error: a plot of a running study
    asks before the first eval is read. Counting every trial that wrote the tag instead would
    probe each trial's steps on every request (on PostgreSQL, a hash of the whole metrics
    table), where these pages cost their own trials' rows.

    Without `eval_name`, each trial's points come from the eval dir of its objective (its best
    step's, else its objective step's), else from the dir the tag was first written to. A
    trial's points beyond its share of the response's cap are thinned evenly (first and last
    kept).
    """
    where = [TrialRunRow.study_id == study.id, TrialRunRow.number.is_not(None)]
    if states:
        where.append(TrialRunRow.state.in_(list(states)))
    if numbers is not None:
        where.append(TrialRunRow.number.in_(list(numbers)))
    total = _count(session, where)
    if offset >= total:
        return [], total

    trials = _history_trials(session, where, limit=limit, offset=offset)
    by_run, first_written = _points_by_run(
        session, where, tag, eval_name=eval_name, limit=limit, offset=offset
    )
    cap = max(1, min(max_points, MAX_HISTORY_POINTS // len(trials)))
    out: list[MetricHistory] = []
    for run_id, number, state, best_dir, objective_dir in trials:
        dirs = by_run.get(run_id, {})
        if not dirs:
            continue
        chosen = next(
            (d for d in (eval_name, best_dir, objective_dir) if d is not None and d in dirs),
            first_written[run_id][1],
        )
        series = dirs[chosen]
        out.append(
            MetricHistory(
                number=int(number or 0),
                state=state,
                eval_name=chosen,
                points=thin(series, cap),
                point_count=len(series),
            )
        )
    return out, total


def _history_trials(session: Session, where: list[Any], *, limit: int, offset: int) -> list[Any]:
    """The page's trials: (run id, number, state, best step's dir, objective step's dir)."""
    best = aliased(EvalStepRow)
    objective = aliased(EvalStepRow)
    return list(
        session.execute(
            select(
                TrialRunRow.id,
                TrialRunRow.number,
                TrialRunRow.state,
                best.eval_name,
                objective.eval_name,
            )
            .outerjoin(best, best.id == TrialRunRow.best_step_id)
            .outerjoin(objective, objective.id == TrialRunRow.objective_step_id)
            .where(*where)
            .order_by(TrialRunRow.number)
            .limit(limit)
            .offset(offset)
        ).all()
    )


def _points_by_run(
    session: Session,
    where: list[Any],
    tag: str,
    *,
    eval_name: str | None,
    limit: int,
    offset: int,
) -> tuple[dict[int, dict[str, list[MetricPoint]]], dict[int, tuple[int, str]]]:
    """The tag's points of the page's trials, by run and eval dir; and, by run, the dir the
    tag was first written to."""
    # The page's run ids as a subquery, not a list: PostgreSQL plans `run_id = ANY(<list>)`
    # as a scan of every eval step, and the subquery as index probes.
    page = (
        select(TrialRunRow.id)
        .where(*where)
        .order_by(TrialRunRow.number)
        .limit(limit)
        .offset(offset)
        .scalar_subquery()
    )
    points = (
        select(
            EvalStepRow.run_id,
            EvalStepRow.eval_name,
            EvalStepRow.id,
            EvalStepRow.step,
            EvalMetricRow.value,
            EvalMetricRow.wall_time,
        )
        .join(EvalMetricRow, EvalMetricRow.eval_step_id == EvalStepRow.id)
        .where(EvalStepRow.run_id.in_(page), EvalMetricRow.tag == tag)
        .order_by(EvalStepRow.run_id, EvalStepRow.step, EvalStepRow.id)
    )
    if eval_name is not None:
        points = points.where(EvalStepRow.eval_name == eval_name)
    by_run: dict[int, dict[str, list[MetricPoint]]] = {}
    first_written: dict[int, tuple[int, str]] = {}
    for run_id, name, step_id, step, value, wall_time in session.execute(points):
        by_run.setdefault(run_id, {}).setdefault(name, []).append(
            MetricPoint(
                step=step, value=math.nan if value is None else float(value), wall_time=wall_time
            )
        )
        first_written[run_id] = min(first_written.get(run_id, (step_id, name)), (step_id, name))
    return by_run, first_written


def thin(points: list[MetricPoint], cap: int) -> list[MetricPoint]:
    """At most `cap` points, evenly spaced over the list, its first and last kept."""
    if len(points) <= cap:
        return points
    if cap == 1:
        return [points[-1]]
    last = len(points) - 1
    return [points[round(i * last / (cap - 1))] for i in range(cap)]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def best_step_tags(session: Session, study_id: int) -> list[str]:
    """Every metric tag written at a best step of the study's trials, sorted: the columns of a
    table of trials with each metric at its best step (one probe of the unique (eval step, tag)
    index per trial)."""
    best_steps = select(TrialRunRow.best_step_id).where(
        TrialRunRow.study_id == study_id, TrialRunRow.best_step_id.is_not(None)
    )
    tags = session.scalars(
        select(EvalMetricRow.tag).where(EvalMetricRow.eval_step_id.in_(best_steps)).distinct()
    )
    return sorted(tags)


def best_step_metrics(
    session: Session, study_id: int, numbers: Sequence[int]
) -> dict[int, dict[str, float | None]]:
    """Each of those trials' metrics at its best step, by trial number (null: NaN)."""
    if not numbers:
        return {}
    rows = session.execute(
        select(TrialRunRow.number, EvalMetricRow.tag, EvalMetricRow.value)
        .join(EvalMetricRow, EvalMetricRow.eval_step_id == TrialRunRow.best_step_id)
        .where(TrialRunRow.study_id == study_id, TrialRunRow.number.in_(list(numbers)))
    ).all()
    found: dict[int, dict[str, float | None]] = {}
    for number, tag, value in rows:
        if number is not None:
            found.setdefault(number, {})[tag] = value
    return found
