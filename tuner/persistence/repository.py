"""Every query and update of the tuner's tables, by aggregate, under one name.

Each aggregate lives in its own module (`studies`, `runs`, `leases`, `journal`, `evals`,
`kept`, `leaderboard`, `retention`, `pins`, `api_tokens`, with the row conversions in `rows`);
this module gathers their public functions so that callers write `repo.<function>` whichever
aggregate it is in.
Every function takes a session and returns entities (ORM rows never leave the package).
"""

from tuner.persistence.api_tokens import (
    create_token,
    list_tokens,
    revoke_token,
    token_scope,
)
from tuner.persistence.evals import (
    eval_steps,
    event_offsets,
    objective_rank,
    record_eval_values,
    save_offsets,
    set_objective_steps,
    tags_seen,
)
from tuner.persistence.journal import (
    event_seq,
    events_after,
    journal,
)
from tuner.persistence.kept import (
    add_checkpoint,
    add_export,
    checkpoints,
    exports,
    exports_to_keep,
    kept_exports,
    known_exports,
    match_exports_by_step,
    remove_checkpoints_except,
    set_checkpoint_archive,
    set_export_archive,
    set_export_kept,
    unmatched_exports,
)
from tuner.persistence.leaderboard import (
    best_completed_run,
    leaderboard,
    objective_value,
    trial_detail,
)
from tuner.persistence.leases import (
    hold_lease,
    renew_leases,
    take_over,
)
from tuner.persistence.pins import (
    pin_run,
    purge_pins,
    renew_pin,
)
from tuner.persistence.retention import (
    claim_deletion,
    deletion_of,
    finish_deletion,
    finished_trials,
    pinned_until,
    trial_artifacts,
    unfinished_deletions,
)
from tuner.persistence.rows import (
    ACTIVE_STATE,
    COUNTED_STATES,
    now,
)
from tuner.persistence.runs import (
    active_runs,
    add_problems,
    attach_trial,
    drop_reservation,
    finish_run,
    get_run,
    get_run_by_number,
    reserve_run,
    reserve_run_with_ordinal,
    runs,
    set_pid,
)
from tuner.persistence.studies import (
    create_study,
    delete_study,
    find_study,
    get_study,
    list_studies,
    running_studies,
    set_study_state,
    trial_counts,
    update_study_spec,
)

__all__ = [
    "ACTIVE_STATE",
    "COUNTED_STATES",
    "active_runs",
    "add_checkpoint",
    "add_export",
    "add_problems",
    "attach_trial",
    "best_completed_run",
    "checkpoints",
    "claim_deletion",
    "create_study",
    "create_token",
    "delete_study",
    "deletion_of",
    "drop_reservation",
    "eval_steps",
    "event_offsets",
    "event_seq",
    "events_after",
    "exports",
    "exports_to_keep",
    "find_study",
    "finish_deletion",
    "finish_run",
    "finished_trials",
    "get_run",
    "get_run_by_number",
    "get_study",
    "hold_lease",
    "journal",
    "kept_exports",
    "known_exports",
    "leaderboard",
    "list_studies",
    "list_tokens",
    "match_exports_by_step",
    "now",
    "objective_rank",
    "objective_value",
    "pin_run",
    "pinned_until",
    "purge_pins",
    "record_eval_values",
    "remove_checkpoints_except",
    "renew_leases",
    "renew_pin",
    "reserve_run",
    "reserve_run_with_ordinal",
    "revoke_token",
    "running_studies",
    "runs",
    "save_offsets",
    "set_checkpoint_archive",
    "set_export_archive",
    "set_export_kept",
    "set_objective_steps",
    "set_pid",
    "set_study_state",
    "tags_seen",
    "take_over",
    "token_scope",
    "trial_artifacts",
    "trial_counts",
    "trial_detail",
    "unfinished_deletions",
    "unmatched_exports",
    "update_study_spec",
]
