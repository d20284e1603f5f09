"""How many of a study's trials a query selects, counted once per version of the study.

A page of the trial list says how many trials its query selects. Counting is the one part of
a page that grows with the study (a filtered count of 100,000 trials costs tens of
milliseconds), while the answer only changes when a trial does, and every change to a trial
appends to the study's journal in the same transaction (`tuner.persistence.journal`). So a
count is kept under the study's journal position read *before* counting: an entry is never
older than the trials it counted, and the next event makes it unreachable. The web page's
live refresh, paging through one query and a finished study's leaderboard all count once.

(A small LRU of our own: the project has no cache library, and this is a dict and a lock.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuner.domain.entities import Study
from tuner.persistence.models import StudyRow, TrialRunRow
from tuner.persistence.rows import ACTIVE_STATE

#: Counts kept per process (a few bytes each).
MAX_ENTRIES = 1024

_lock = threading.Lock()
_counts: OrderedDict[Hashable, int] = OrderedDict()


def counted(
    session: Session,
    study: Study,
    query: Hashable,
    count: Callable[[], int],
    *,
    reads_values: bool,
) -> int:
    """`count()`, or what it gave for the same query at this version of the study.

    A query that `reads_values` (an objective or metric filter) is only kept while no trial
    runs: a running trial's best step moves with the commit after its eval's (whose events
    came first), so such a count could lag by a step until the trial's next event.
    """
    seq = session.scalar(select(StudyRow.event_seq).where(StudyRow.id == study.id))
    if seq is None:
        return count()  # the study is gone: nothing to key on
    if reads_values and _any_running(session, study.id):
        return count()
    bind = session.get_bind()
    url = bind.engine.url.render_as_string(hide_password=True)
    key = (url, study.id, study.created_at, seq, query)
    with _lock:
        if key in _counts:
            _counts.move_to_end(key)
            return _counts[key]
    value = count()
    with _lock:
        _counts[key] = value
        while len(_counts) > MAX_ENTRIES:
            _counts.popitem(last=False)
    return value


def _any_running(session: Session, study_id: int) -> bool:
    running = select(TrialRunRow.id).where(
        TrialRunRow.study_id == study_id, TrialRunRow.state == ACTIVE_STATE
    )
    return session.scalar(running.limit(1)) is not None
