"""What a trial keeps: its best step's checkpoint and its exports, and their stored archives."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuner.domain.entities import (
    Checkpoint,
    Export,
    StoredArchive,
)
from tuner.persistence.models import (
    CheckpointRow,
    EvalStepRow,
    ExportRow,
)
from tuner.persistence.rows import now, stored_archive, to_checkpoint


def add_checkpoint(
    session: Session, run_id: int, *, step: int, source_path: str, kept_path: str
) -> None:
    existing = session.scalar(
        select(CheckpointRow).where(CheckpointRow.run_id == run_id, CheckpointRow.step == step)
    )
    if existing is not None:
        # The step's reported `checkpoint_path` replaces an earlier guess.
        existing.source_path = source_path
        existing.kept_path = kept_path
    else:
        session.add(
            CheckpointRow(
                run_id=run_id,
                step=step,
                source_path=source_path,
                kept_path=kept_path,
                created_at=now(),
            )
        )


def remove_checkpoints_except(session: Session, run_id: int, keep_step: int) -> list[Checkpoint]:
    rows = session.scalars(
        select(CheckpointRow).where(CheckpointRow.run_id == run_id, CheckpointRow.step != keep_step)
    ).all()
    removed = [to_checkpoint(r) for r in rows]
    for row in rows:
        session.delete(row)
    return removed


def checkpoints(session: Session, run_id: int) -> list[Checkpoint]:
    rows = session.scalars(
        select(CheckpointRow).where(CheckpointRow.run_id == run_id).order_by(CheckpointRow.step)
    ).all()
    return [to_checkpoint(r) for r in rows]


def known_exports(session: Session, run_id: int) -> set[tuple[str, str]]:
    rows = session.execute(
        select(ExportRow.exporter, ExportRow.version).where(ExportRow.run_id == run_id)
    ).all()
    return {(e, v) for e, v in rows}


def add_export(
    session: Session,
    run_id: int,
    *,
    exporter: str,
    version: str,
    path: str,
    wall_time: float,
    global_step: int | None,
    eval_name: str | None,
) -> None:
    """Record an export, matched to the eval step it was made from.

    With the global step read from the export's variables, that step (in the objective's eval
    dir `eval_name` when it has one) is the match, now or once it is read. Without it, the
    export goes to the last eval step written before it: estimators export right after an
    eval's summaries and before training on.
    """
    row = ExportRow(
        run_id=run_id, exporter=exporter, version=version, path=path, global_step=global_step
    )
    session.add(row)
    if global_step is None:
        row.eval_step_id = session.scalar(
            select(EvalStepRow.id)
            .where(EvalStepRow.run_id == run_id, EvalStepRow.wall_time <= wall_time)
            .order_by(EvalStepRow.wall_time.desc(), EvalStepRow.step.desc())
            .limit(1)
        )
        row.matched_by = "write_time" if row.eval_step_id is not None else None
    else:
        session.flush()
        match_exports_by_step(session, run_id, eval_name)


def match_exports_by_step(session: Session, run_id: int, eval_name: str | None) -> bool:
    """Tie exports whose global step is known to that step's eval, once it has been read.

    Returns whether any export was matched.
    """
    pending = session.scalars(
        select(ExportRow).where(
            ExportRow.run_id == run_id,
            ExportRow.global_step.is_not(None),
            ExportRow.matched_by.is_(None),
        )
    ).all()
    matched = False
    for export in pending:
        candidates = session.execute(
            select(EvalStepRow.id, EvalStepRow.eval_name).where(
                EvalStepRow.run_id == run_id, EvalStepRow.step == export.global_step
            )
        ).all()
        if not candidates:
            continue
        preferred = [i for i, name in candidates if name == eval_name]
        export.eval_step_id = (preferred or [min(i for i, _ in candidates)])[0]
        export.matched_by = "global_step"
        matched = True
    return matched


def unevaluated_exports(session: Session, run_id: int) -> list[tuple[int, str, str, str, int]]:
    """(id, exporter, version, path, global step) of the exports whose global step no eval
    step has: their trainer's steps are not global steps (epochs, or hypertune's own)."""
    rows = session.execute(
        select(
            ExportRow.id,
            ExportRow.exporter,
            ExportRow.version,
            ExportRow.path,
            ExportRow.global_step,
        ).where(
            ExportRow.run_id == run_id,
            ExportRow.eval_step_id.is_(None),
            ExportRow.global_step.is_not(None),
        )
    ).all()
    return [(i, e, v, p, g) for i, e, v, p, g in rows if g is not None]


def tie_export_by_time(
    session: Session, export_id: int, run_id: int, wall_time: float, eval_name: str | None
) -> int | None:
    """Tie an export to the last eval step written before it (of the objective's eval dir
    when it has one): the step whose report came just before the save. Its step, or None."""
    query = select(EvalStepRow.id, EvalStepRow.step).where(
        EvalStepRow.run_id == run_id, EvalStepRow.wall_time <= wall_time
    )
    if eval_name is not None:
        query = query.where(EvalStepRow.eval_name == eval_name)
    found = session.execute(
        query.order_by(EvalStepRow.wall_time.desc(), EvalStepRow.step.desc()).limit(1)
    ).first()
    if found is None:
        return None
    session.execute(
        update(ExportRow)
        .where(ExportRow.id == export_id)
        .values(eval_step_id=found[0], matched_by="write_time")
    )
    return int(found[1])


def unmatched_exports(session: Session, run_id: int) -> list[tuple[str, str, int | None]]:
    """(exporter, version, global step) of the exports tied to no eval step."""
    rows = session.execute(
        select(ExportRow.exporter, ExportRow.version, ExportRow.global_step).where(
            ExportRow.run_id == run_id, ExportRow.eval_step_id.is_(None)
        )
    ).all()
    return [(e, v, g) for e, v, g in rows]


def exports_to_keep(
    session: Session, run_id: int, best_step_id: int | None
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(exports of the best step not yet kept, kept copies of other steps), as (id, path)."""
    rows = session.execute(
        select(ExportRow.id, ExportRow.path, ExportRow.kept_path, ExportRow.eval_step_id).where(
            ExportRow.run_id == run_id
        )
    ).all()
    keep = [(i, p) for i, p, k, step in rows if step == best_step_id and k is None]
    drop = [(i, k) for i, _, k, step in rows if step != best_step_id and k is not None]
    return keep, drop


def set_export_kept(session: Session, export_id: int, kept_path: str | None) -> None:
    session.execute(update(ExportRow).where(ExportRow.id == export_id).values(kept_path=kept_path))


def exports(session: Session, run_id: int) -> list[Export]:
    rows = session.execute(
        select(ExportRow, EvalStepRow.step)
        .outerjoin(EvalStepRow, EvalStepRow.id == ExportRow.eval_step_id)
        .where(ExportRow.run_id == run_id)
        .order_by(ExportRow.version, ExportRow.exporter)
    ).all()
    return [
        Export(
            exporter=e.exporter,
            version=e.version,
            path=e.kept_path or e.path,
            step=step,
            matched_by=e.matched_by if step is not None else None,
            archive=stored_archive(e),
        )
        for e, step in rows
    ]


def kept_exports(session: Session, run_id: int) -> list[tuple[int, str]]:
    """(export id, kept path) of the run's kept exports (those of its best step)."""
    rows = session.execute(
        select(ExportRow.id, ExportRow.kept_path).where(
            ExportRow.run_id == run_id, ExportRow.kept_path.is_not(None)
        )
    ).all()
    return [(row.id, row.kept_path) for row in rows]


def set_checkpoint_archive(
    session: Session, run_id: int, step: int, archive: StoredArchive
) -> None:
    session.execute(
        update(CheckpointRow)
        .where(CheckpointRow.run_id == run_id, CheckpointRow.step == step)
        .values(archive_path=archive.path, archive_sha256=archive.sha256, archive_size=archive.size)
    )


def set_export_archive(session: Session, export_id: int, archive: StoredArchive) -> None:
    session.execute(
        update(ExportRow)
        .where(ExportRow.id == export_id)
        .values(archive_path=archive.path, archive_sha256=archive.sha256, archive_size=archive.size)
    )
