"""Ask Optuna for the next trial of a study: reproducibly seeded and never a duplicate.

Several managers may ask for trials of one study at the same time. `propose` is how they ask:
the manager first reserves a slot (a run row, under the study's row lock), which gives the claim
an *ordinal* (how many runs of the study were reserved before it) that no other claim of the
study has and that, on one manager running trials one at a time, equals the trial count.

Seeding. With `seed` set, every ask gets a sampler of its own, seeded from
`(seed, ordinal, attempt)` through NumPy's `SeedSequence`: two claims never share a sampler state,
a fresh study replays exactly on one manager, and studies with seeds `s` and `s + 1` do not draw
the same sequence shifted by one trial (which `seed + ordinal` would do). Per sampler:

- TPE, RANDOM_SEARCH: stateless between asks (TPE rebuilds its model from the storage), so a
  per-ask seed is exact. Unseeded: a fresh OS-seeded sampler per ask.
- CMA_ES: its optimizer state lives in trial system attrs; its only per-ask randomness is
  `rng.randint(...) + trial.number`, drawn from the sampler's RNG (and the RandomSampler used for
  the startup trials and categorical params), so a per-ask seed is exact too.
- GP (needs torch; not exercised by the tests without it): the RNG drives the startup
  RandomSampler and the acquisition optimizer, so a per-ask seed is exact; the sampler's
  in-memory warm start of the kernel fit is lost on every ask (a little slower to fit, but no
  longer dependent on what the process asked before).
- QMC: NOT seeded per ask. The sampler draws point `k` of a scrambled Sobol sequence whose
  scramble depends on the seed, `k` being a counter kept in the study's system attrs *per seed*:
  a new seed per ask would always draw point 0 of a new scramble, i.e. plain random sampling.
  Every ask of a study uses one seed: `seed`, or when unset a seed derived from the study's name
  and Optuna id (stable across managers and restarts, so they all walk one sequence).
- GRID_SEARCH: NOT seeded per ask. GridSampler gives trial number `n` the grid point `n` of the
  grid shuffled by its seed (`seed or 0`): every ask must shuffle with the same seed, or two
  managers map the same trial numbers to different points and repeat some (with the former
  `seed + trials so far`, one reopen after 6 trials of a 24-point grid repeated 5 points).

Duplicates. Two trials are duplicates when the trainer would get the same flags: the values
are passed through `sampling.trainer_values` (reverse-log values reversed and rounded) and
`sampling.format_flag_value`, and compared exactly, with no tolerance (`repr` of a float is
exact, so two floats are equal only when they are the same number). A new trial is a duplicate
when one of the study's other trials that holds its params came first (lower number), or was
enqueued on purpose (fixed params: `tuner retry`, a stopped or lost trial run again). Holding
params means being COMPLETE, PRUNED, RUNNING, WAITING (its fixed params) or FAIL: a failed
trial's params are not drawn again (TPE ignores failures and would re-propose a config that
crashes); `tuner retry` enqueues them on purpose. Trials failed as duplicates hold nothing.
A trial with fixed params from `enqueue_trial` is never a duplicate itself. A RUNNING trial of
another manager may still be writing its params (Optuna writes them one by one): when its
params so far match, the check waits for it, up to `SETTLE_SECONDS`.

A duplicate is told FAIL (it never ran) with user attr `duplicate_of=<number>`, and the ask is
repeated with the next attempt's seed. After `max_attempts` duplicates in a row, or as soon as
the sampler draws the same duplicate twice (it is stuck: TPE, CMA-ES and GP do not see failed
trials, so they keep drawing it; in a 24-combination space TPE needed a fallback for half of its
trials and drew 260 duplicates with 20 attempts, 26 with this rule):

- finite space (no DOUBLE): a uniformly random combination that no trial holds (from the seed
  when seeded) is asked for, with a one-off sampler that draws exactly it; the trial gets user
  attr `unseen_fill`. It is not enqueued: on SQLite, two managers asking at once can both pop
  the same enqueued trial (Optuna's pop is a read then a write, with no row lock there);
- infinite space: the next asks use a RandomSampler (from the seed when seeded). A duplicate
  there means the sampler is stuck on exact values (e.g. GP or CMA-ES on a bound); running it
  anyway would break the rule, and a random DOUBLE repeats with probability zero.

`FALLBACK_ATTEMPTS` such asks are made before giving up with `Exhausted` (only a race with other
managers can make them all duplicates). When every combination of a finite space is held, and
no enqueued trial waits, `propose` returns `Exhausted` without asking.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
import math
import random
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.domain.spec import Algorithm, ParameterSpec, StudySpec
from tuner.persistence import Database
from tuner.study import sampling
from tuner.study.operations import Backend, tell

logger = logging.getLogger(__name__)

#: User attr of a trial failed as a duplicate: the number of the trial that holds its params.
DUPLICATE_OF = "duplicate_of"
#: User attr of a trial given unseen params (a fallback) after too many duplicates.
UNSEEN_FILL = "unseen_fill"
#: States in which a trial holds its params (FAIL unless it failed as a duplicate).
HOLDING_STATES = (
    TrialState.COMPLETE,
    TrialState.PRUNED,
    TrialState.RUNNING,
    TrialState.WAITING,
    TrialState.FAIL,
)
#: How long to wait for another manager's trial to finish writing its params.
SETTLE_SECONDS = 1.0
#: Asks with a fallback (unseen combination, random sampler) after `max_attempts` duplicates.
FALLBACK_ATTEMPTS = 5

Key = tuple[str, ...]
#: A conditional parameter a trial does not have, in its key (no flag text holds a NUL).
ABSENT = "\x00"


@dataclass(frozen=True)
class Exhausted:
    """No trial can be proposed: every combination of a finite search space is taken."""

    reason: str


def propose(
    backend: Backend, spec: StudySpec, *, ordinal: int, max_attempts: int = 20
) -> optuna.trial.Trial | Exhausted:
    """Ask Optuna for a trial whose params no other trial of the study has.

    `ordinal` is the claim's rank among the study's claims (unique per study; on one manager,
    the number of trials before it): with `spec.seed` set, it seeds the ask, so the same spec
    and seed on a fresh study propose the same params in the same order.

    The trial is RUNNING in Optuna (or is an enqueued trial, taken from the queue); a trial
    drawn as a duplicate was told FAIL with user attr `duplicate_of`. Returns `Exhausted` when
    every combination of a finite space is held by a trial (one that ran, runs, failed or
    waits in the queue) and no enqueued trial waits.
    """
    if ordinal < 0:
        raise ValueError(f"ordinal must be >= 0, got {ordinal}")
    if max_attempts < 0:
        raise ValueError(f"max_attempts must be >= 0, got {max_attempts}")
    study_id = backend.storage.get_study_id_from_name(spec.name)
    with _open_study(backend, spec, study_id) as entry:
        fixed = _fixed_sampler(spec, study_id)
        return _Proposal(entry, spec, ordinal, max_attempts, fixed).run()


class _Proposal:
    """One `propose` call: asks until a trial holds params of its own."""

    def __init__(
        self,
        entry: _OpenStudy,
        spec: StudySpec,
        ordinal: int,
        max_attempts: int,
        fixed: optuna.samplers.BaseSampler | None,
    ) -> None:
        self.study = entry.study
        self.finished = entry.finished_views(spec)
        self.spec = spec
        self.ordinal = ordinal
        self.max_attempts = max_attempts
        self.fixed = fixed
        self.space = sampling.search_space(spec)
        self.names = [p.parameter_name for p in spec.hyperparameters.all_params]
        hp = spec.hyperparameters
        finite = all(p.is_finite for p in hp.params)
        self.grid: _Grid | _TreeGrid | None = None
        if finite:
            self.grid = _TreeGrid.of(spec) if hp.has_conditionals else _Grid.of(spec, self.space)
        #: A grid of conditional parameters is walked here: Optuna's GridSampler cannot.
        self.walks_grid = hp.algorithm is Algorithm.GRID_SEARCH and hp.has_conditionals

    def run(self) -> optuna.trial.Trial | Exhausted:
        drawn: set[Key | None] = set()  # the duplicates the sampler drew
        sampler_asks = fallback_asks = 0
        while True:
            attempt = sampler_asks + fallback_asks
            fallback = sampler_asks >= self.max_attempts
            if fallback and fallback_asks >= FALLBACK_ATTEMPTS:
                return Exhausted(
                    f"no params unlike those of the study's trials were found in {attempt} asks"
                )
            chosen: dict[str, Any] | None = None
            if self.grid is not None:
                views = self.views()
                held = {v.key for v in views if v.holds and v.valid and v.key is not None}
                waiting = any(v.state is TrialState.WAITING for v in views)
                if len(held) >= self.grid.size and not waiting:
                    return Exhausted(self.grid.exhausted_reason(views))
                if (fallback or self.walks_grid) and len(held) < self.grid.size:
                    chosen = self.grid.unseen(held, _rng(self.spec, self.ordinal, attempt))
            if chosen is not None:
                self.study.sampler = _Chosen(chosen)
            elif self.fixed is not None:
                self.study.sampler = self.fixed
            else:
                self.study.sampler = _sampler(
                    self.spec, self.ordinal, attempt, random_only=fallback
                )
            if self.spec.hyperparameters.has_conditionals:
                trial = self.study.ask()
                try:
                    sampling.suggest(trial, self.spec)
                except BaseException:
                    with contextlib.suppress(Exception):
                        tell(self.study, trial.number, state=TrialState.FAIL)
                    raise
            else:
                trial = self.study.ask(dict(self.space))
            try:
                holder, ours = self.holder(trial)
                if chosen is not None and not ours.exempt:
                    trial.set_user_attr(UNSEEN_FILL, True)
                if holder is not None:
                    logger.info(
                        "study %s: trial %d drew the params of trial %d; asking again",
                        self.spec.name,
                        trial.number,
                        holder,
                    )
                    trial.set_user_attr(DUPLICATE_OF, holder)
                    tell(self.study, trial.number, state=TrialState.FAIL)
            except BaseException:
                # The caller never learns of this trial: do not leave it RUNNING for ever.
                with contextlib.suppress(Exception):
                    tell(self.study, trial.number, state=TrialState.FAIL)
                raise
            if holder is None:
                return trial
            if fallback:
                fallback_asks += 1
            elif ours.key in drawn:
                # The sampler is stuck: TPE, CMA-ES and GP do not see failed trials, so asking
                # again mostly draws the same params.
                sampler_asks = self.max_attempts
            else:
                drawn.add(ours.key)
                sampler_asks += 1

    def views(self) -> list[_View]:
        views = []
        for trial in self.study.get_trials(deepcopy=False):
            view = self.finished.get(trial._trial_id)
            if view is None:
                view = _view(self.spec, self.space, self.names, trial)
                if trial.state.is_finished():
                    self.finished[trial._trial_id] = view
            views.append(view)
        return views

    def holder(self, trial: optuna.trial.Trial) -> tuple[int | None, _View]:
        """The trial holding the params `trial` repeats (None if none), and `trial`'s view.

        An earlier trial of another manager still writing params that match so far is waited
        for, up to SETTLE_SECONDS.
        """
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            views = self.views()
            ours = next(v for v in views if v.trial_id == trial._trial_id)
            if ours.exempt:
                return None, ours
            holder = _holder(views, ours)
            if not isinstance(holder, _Unsettled):
                return holder, ours
            if time.monotonic() >= deadline:
                logger.warning(
                    "study %s: an earlier trial is still writing its params after %.1f s; "
                    "trial %d is kept",
                    self.spec.name,
                    SETTLE_SECONDS,
                    trial.number,
                )
                return None, ours
            time.sleep(0.02)


# -- the study object ------------------------------------------------------------------------


class _OpenStudy:
    """One Optuna study object per study and storage, kept for its cache of finished trials.

    A fresh `load_study` costs ~2 ms, but its first read of the trials is cold: all of them are
    read again (~0.4 ms a trial on SQLite), where a kept study reads only new and unfinished
    ones. The lock keeps the sampler, set anew for every ask, to one `propose` at a time.
    """

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.lock = threading.Lock()
        #: Views of finished trials (which no longer change), for the search space below.
        self.views: dict[int, _View] = {}
        self.params: list[ParameterSpec] = []

    def finished_views(self, spec: StudySpec) -> dict[int, _View]:
        if self.params != spec.hyperparameters.params:
            self.views.clear()
            self.params = list(spec.hyperparameters.params)
        return self.views


#: By the backend's `Database` (not its storage, which the studies refer to: a weak key must not
#: be kept alive by its value), then by study name and Optuna id.
_OPEN: weakref.WeakKeyDictionary[Database, dict[tuple[str, int], _OpenStudy]] = (
    weakref.WeakKeyDictionary()
)
_OPEN_LOCK = threading.Lock()


@contextlib.contextmanager
def _open_study(backend: Backend, spec: StudySpec, study_id: int) -> Iterator[_OpenStudy]:
    # Keyed by Optuna's id too: a study deleted and created again under its name is another.
    key = (spec.name, study_id)
    with _OPEN_LOCK:
        studies = _OPEN.setdefault(backend.db, {})
        entry = studies.get(key)
        if entry is None:
            study = optuna.load_study(
                study_name=spec.name,
                storage=backend.storage,
                sampler=optuna.samplers.RandomSampler(),
                pruner=optuna.pruners.NopPruner(),
            )
            entry = studies[key] = _OpenStudy(study)
    with entry.lock:
        entry.study.pruner = sampling.make_pruner(spec.pruner)
        yield entry


# -- samplers ----------------------------------------------------------------------------------


def ask_seed(spec: StudySpec, ordinal: int, attempt: int) -> int | None:
    """The seed of one ask: from `(seed, ordinal, attempt)`, or None for an unseeded spec."""
    if spec.seed is None:
        return None
    state = np.random.SeedSequence([spec.seed, ordinal, attempt]).generate_state(1)
    return int(state[0])


def _sampler(
    spec: StudySpec, ordinal: int, attempt: int, *, random_only: bool
) -> optuna.samplers.BaseSampler:
    seed = ask_seed(spec, ordinal, attempt)
    if random_only:
        return optuna.samplers.RandomSampler(seed=seed)
    return sampling.make_sampler(spec.model_copy(update={"seed": seed}))


def _fixed_sampler(spec: StudySpec, study_id: int) -> optuna.samplers.BaseSampler | None:
    """The one sampler of every ask for algorithms whose seed must not change (see above)."""
    algorithm = spec.hyperparameters.algorithm
    if algorithm is Algorithm.GRID_SEARCH:
        return sampling.make_sampler(spec)
    if algorithm is Algorithm.QMC:
        seed = spec.seed
        if seed is None:
            digest = hashlib.sha256(f"qmc:{spec.name}:{study_id}".encode()).digest()
            seed = int.from_bytes(digest[:4], "big")
        return sampling.make_sampler(spec.model_copy(update={"seed": seed}))
    return None


class _Chosen(optuna.samplers.BaseSampler):
    """A sampler that draws the one combination `propose` picked (an ask, not the queue)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._params = dict(params)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._params[param_name]


def _rng(spec: StudySpec, ordinal: int, attempt: int) -> random.Random:
    seed = ask_seed(spec, ordinal, attempt)
    return random.Random(seed) if seed is not None else random.Random()


# -- what each trial holds ---------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    """One trial as the duplicate rule sees it."""

    number: int
    trial_id: int
    state: TrialState
    #: Flag text of each param it has (or will have, when enqueued) so far.
    flags: dict[str, str]
    #: All params, in spec order; None while some are missing.
    key: Key | None
    #: Every value lies in the current search space.
    valid: bool
    #: Enqueued with fixed params on purpose: never a duplicate, and never yields.
    exempt: bool
    #: Holds its params (see HOLDING_STATES).
    holds: bool

    @property
    def order(self) -> tuple[int, int]:
        return self.number, self.trial_id


def _view(
    spec: StudySpec,
    space: Mapping[str, BaseDistribution],
    names: Sequence[str],
    trial: FrozenTrial,
) -> _View:
    fixed = trial.system_attrs.get("fixed_params")
    raw: dict[str, Any] = {**(fixed if isinstance(fixed, dict) else {}), **trial.params}
    values: dict[str, Any] = {}
    valid = True
    for name in names:
        if name not in raw:
            continue
        value, inside = _normalize(space[name], raw[name])
        values[name] = value
        valid = valid and inside
    try:
        trainer = sampling.trainer_values(spec, values)
    except (TypeError, ValueError):  # a value the trainer conversion cannot take
        trainer, valid = values, False
    flags = {name: sampling.format_flag_value(v) for name, v in trainer.items()}
    if spec.hyperparameters.has_conditionals:
        active = {p.parameter_name for p in sampling.active_params(spec, values)}
        complete = all(name in flags for name in active)
        valid = valid and set(flags) <= active
        key = tuple(flags.get(n, ABSENT) for n in names) if complete else None
    else:
        complete = all(name in flags for name in names)
        key = tuple(flags[n] for n in names) if complete else None
    duplicate = trial.state is TrialState.FAIL and DUPLICATE_OF in trial.user_attrs
    return _View(
        number=trial.number,
        trial_id=trial._trial_id,
        state=trial.state,
        flags=flags,
        key=key,
        valid=valid,
        exempt=fixed is not None,
        holds=trial.state in HOLDING_STATES and not duplicate,
    )


def _normalize(dist: BaseDistribution, value: Any) -> tuple[Any, bool]:
    """The value as the distribution returns it (e.g. a choice, not an equal number)."""
    try:
        internal = dist.to_internal_repr(value)
        if not dist._contains(internal):
            return value, False
        return dist.to_external_repr(internal), True
    except (TypeError, ValueError):
        return value, False


class _Unsettled:
    """An earlier trial is still writing params that so far match."""


UNSETTLED = _Unsettled()


def _holder(views: Sequence[_View], ours: _View) -> int | _Unsettled | None:
    """The number of the trial whose params `ours` repeats and which keeps them, if any."""
    unsettled = False
    for other in sorted(views, key=lambda v: v.order):
        if other.trial_id == ours.trial_id or not other.holds:
            continue
        if not (other.exempt or other.order < ours.order):
            continue  # a later sampled trial yields to ours
        if other.key is not None:
            if other.key == ours.key:
                return other.number
        elif other.state is TrialState.RUNNING and all(
            ours.flags.get(name) == flag for name, flag in other.flags.items()
        ):
            unsettled = True
    return UNSETTLED if unsettled else None


# -- finite spaces -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Every combination of a finite space, indexed in mixed radix (first param slowest)."""

    names: tuple[str, ...]
    #: Per param: the sampler's values, and the flag text the trainer gets for each.
    values: tuple[tuple[Any, ...], ...]
    flags: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, spec: StudySpec, space: Mapping[str, BaseDistribution]) -> _Grid:
        names, values, flags = [], [], []
        for param in spec.hyperparameters.params:
            name = param.parameter_name
            dist = space[name]
            choices: list[Any]
            if isinstance(dist, CategoricalDistribution):
                choices = list(dist.choices)
            else:
                assert isinstance(dist, IntDistribution)
                choices = list(range(dist.low, dist.high + 1, dist.step))
            by_flag: dict[str, Any] = {}
            for choice in choices:
                trainer = sampling.trainer_values(spec, {name: choice})[name]
                by_flag.setdefault(sampling.format_flag_value(trainer), choice)
            names.append(name)
            flags.append(tuple(by_flag))
            values.append(tuple(by_flag.values()))
        return cls(tuple(names), tuple(values), tuple(flags))

    @property
    def size(self) -> int:
        return math.prod(len(f) for f in self.flags)

    def index(self, key: Key) -> int:
        index = 0
        for flags, flag in zip(self.flags, key, strict=True):
            index = index * len(flags) + flags.index(flag)
        return index

    def params(self, index: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, values in reversed(list(zip(self.names, self.values, strict=True))):
            index, position = divmod(index, len(values))
            out[name] = values[position]
        return {name: out[name] for name in self.names}

    def unseen(self, held: set[Key], rng: random.Random) -> dict[str, Any]:
        """A uniformly random combination not in `held` (which must leave one)."""
        taken = sorted(self.index(key) for key in held)
        free = self.size - len(taken)
        assert free > 0
        wanted = rng.randrange(free)
        # The `wanted`-th free index: skip every taken index at or below the candidate.
        index = wanted
        while True:
            below = bisect.bisect_right(taken, index)
            if wanted + below == index:
                return self.params(index)
            index = wanted + below

    def exhausted_reason(self, views: Sequence[_View]) -> str:
        return _exhausted_reason(self.size, views)


def _exhausted_reason(size: int, views: Sequence[_View]) -> str:
    """Why a finite space has nothing left to propose."""
    holding = [v for v in views if v.holds and v.valid and v.key is not None]
    done = {v.key for v in holding if v.state is not TrialState.FAIL}
    running = {v.key for v in holding if v.state is TrialState.RUNNING}
    failed = {v.key for v in holding} - done
    reason = f"the search space is exhausted: all {size} combinations have been run"
    if running:
        reason += f" or are running ({len(running)} running)"
    if failed:
        reason += f"; {len(failed)} of them only in failed trials (`tuner retry` runs those again)"
    return reason


@dataclass(frozen=True)
class _TreeGrid:
    """Every combination of a finite space with conditional parameters, listed: a child is in
    a combination only where its parent's value activates it (`ABSENT` elsewhere)."""

    names: tuple[str, ...]
    keys: tuple[Key, ...]
    params_of: tuple[dict[str, Any], ...]

    @classmethod
    def of(cls, spec: StudySpec) -> _TreeGrid:
        names = tuple(p.parameter_name for p in spec.hyperparameters.all_params)
        combos: list[dict[str, Any]] = [{}]
        for param in spec.hyperparameters.params:
            combos = [{**c, **more} for c in combos for more in _combinations(spec, param)]
        keys: dict[Key, dict[str, Any]] = {}
        for combo in combos:
            flags = {
                n: sampling.format_flag_value(v)
                for n, v in sampling.trainer_values(spec, combo).items()
            }
            keys.setdefault(tuple(flags.get(n, ABSENT) for n in names), combo)
        return cls(names, tuple(keys), tuple(keys.values()))

    @property
    def size(self) -> int:
        return len(self.keys)

    def unseen(self, held: set[Key], rng: random.Random) -> dict[str, Any]:
        """A uniformly random combination not in `held` (which must leave one)."""
        free = [i for i, key in enumerate(self.keys) if key not in held]
        assert free
        return dict(self.params_of[rng.choice(free)])

    def exhausted_reason(self, views: Sequence[_View]) -> str:
        return _exhausted_reason(self.size, views)


def _combinations(spec: StudySpec, param: ParameterSpec) -> list[dict[str, Any]]:
    """The sampler values of `param` and its active children, one dict per combination."""
    dist = sampling.distribution(param)
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
    else:
        assert isinstance(dist, IntDistribution)
        choices = list(range(dist.low, dist.high + 1, dist.step))
    out: list[dict[str, Any]] = []
    for choice in choices:
        value = sampling.trainer_values(spec, {param.parameter_name: choice}, only=[param])
        combos: list[dict[str, Any]] = [{param.parameter_name: choice}]
        for child in param.children_for(value[param.parameter_name]):
            combos = [{**c, **more} for c in combos for more in _combinations(spec, child)]
        out += combos
    return out
