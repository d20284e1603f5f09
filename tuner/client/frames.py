"""A study's trials as a pandas DataFrame, shaped like Optuna's `Study.trials_dataframe()`.

pandas is optional (the `dataframe` extra): it is imported only when a frame is asked for, and
its absence says how to install it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tuner.public.schemas import StudyPublic, TrialRowPublic

if TYPE_CHECKING:
    import pandas

INSTALL_HINT = "pip install 'estimator-tuner[dataframe]'"


def import_pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(
            f"trials_dataframe() needs pandas, which is not installed: {INSTALL_HINT}"
        ) from exc
    return pandas


def trials_frame(study: StudyPublic, rows: Iterable[TrialRowPublic]) -> pandas.DataFrame:
    """One row per trial, by number: `number`, `value` (or `values_<metric>` for each of
    several objectives), `datetime_start`, `datetime_complete`, `duration`, `params_<name>`
    (every param any trial has, by name; missing where a trial lacks it, e.g. a conditional
    one), `best_step`, `last_step`, `failure_reason`, `state`. Times are UTC."""
    pd = import_pandas()
    metrics = [o.metric for o in study.objectives]
    several = len(metrics) > 1
    ordered = sorted(rows, key=lambda r: r.number)
    names = sorted({name for row in ordered for name in row.params})
    records: list[dict[str, Any]] = []
    for row in ordered:
        record: dict[str, Any] = {"number": row.number}
        if several:
            for metric in metrics:
                record[f"values_{metric}"] = row.objectives.get(metric)
        else:
            record["value"] = row.objective
        record["datetime_start"] = row.started_at
        record["datetime_complete"] = row.ended_at
        for name in names:
            record[f"params_{name}"] = row.params.get(name)
        record["best_step"] = row.best_step
        record["last_step"] = row.last_step
        record["failure_reason"] = row.failure_reason
        record["state"] = row.state
        records.append(record)
    values = [f"values_{m}" for m in metrics] if several else ["value"]
    columns = [
        "number",
        *values,
        "datetime_start",
        "datetime_complete",
        "duration",
        *(f"params_{name}" for name in names),
        "best_step",
        "last_step",
        "failure_reason",
        "state",
    ]
    frame = pd.DataFrame.from_records(records, columns=[c for c in columns if c != "duration"])
    for column in ("datetime_start", "datetime_complete"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["duration"] = frame["datetime_complete"] - frame["datetime_start"]
    for column in values:
        frame[column] = frame[column].astype("float64")
    return frame[columns]
