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
- GP (needs torch): the RNG drives the startup RandomSampler and the acquisition optimizer, so a
  per-ask seed is exact; the sampler's in-memory warm start of the kernel fit is lost on every
  ask (a little slower to fit, but no longer dependent on what the process asked before).
- QMC: NOT seeded per ask. The sampler draws point `k` of a scrambled Sobol sequence whose
  scramble depends on the seed, `k` being a counter kept in the study's system attrs *per seed*:
  a new seed per ask would always draw point 0 of a new scramble, i.e. plain random sampling.
  Every ask of a study uses one seed: `seed`, or when unset a seed derived from the study's name
  and Optuna id (stable across managers and restarts, so they all walk one sequence).
- GRID_SEARCH: NOT seeded per ask. GridSampler gives trial number `n` the grid point `n` of the
  grid shuffled by its seed (`seed or 0`): every ask must shuffle with the same seed, or two
  managers map the same trial numbers to different points and repeat some.

Duplicates. Two trials are duplicates when the trainer would get the same flags: the values
are passed through `sampling.trainer_values` (reverse-log values reversed and rounded) and
`sampling.format_flag_value`, and compared exactly, with no tolerance (`repr` of a float is
exact, so two floats are equal only when they are the same number). A new trial is a duplicate
when one of the study's other trials that holds its params came first (lower number), or was
enqueued on purpose (fixed params: `tuner retry`, a stopped or lost trial run again). Holding
params means being COMPLETE, PRUNED, RUNNING, WAITING (its fixed params) or FAIL: a failed
trial's params are not drawn again (TPE ignores failures and would re-propose a config that
crashes); `tuner retry` enqueues them on purpose. Trials failed as duplicates hold nothing.
A trial with fixed params from `enqueue_trial` is never a duplicate itself (those that
`propose` enqueues to fill the space, marked `unseen_fill`, are checked like sampled ones).
A RUNNING trial of another manager may still be writing its params: the check waits for it up
to `SETTLE_SECONDS` when its params so far match.

A duplicate is told FAIL (it never ran) with user attr `duplicate_of=<number>`, and the ask is
repeated with the next attempt's seed. After `max_attempts` duplicates in a row:

- finite space (no DOUBLE): a uniformly random combination that no trial holds (from the seed
  when seeded) is enqueued and asked for;
- infinite space: the next asks use a RandomSampler (from the seed when seeded). A duplicate
  there means the sampler is stuck on exact values (e.g. GP or CMA-ES on a bound); running it
  anyway would break the rule, and a random DOUBLE repeats with probability zero.

When every combination of a finite space is held (and no enqueued trial waits), `propose`
returns `Exhausted` without asking.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner import sampling
from tuner.spec import Algorithm, StudySpec
from tuner.studies import Backend, tell

logger = logging.getLogger(__name__)

#: User attr of a trial failed as a duplicate: the number of the trial that holds its params.
DUPLICATE_OF = "duplicate_of"
#: User attr of a trial `propose` enqueued with unseen params after too many duplicates.
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
    space = sampling.search_space(spec)
    names = [p.parameter_name for p in spec.hyperparameters.params]
    grid = _Grid.of(spec, space) if all(p.is_finite for p in spec.hyperparameters.params) else None
    fixed = _fixed_sampler(backend, spec)
    study = optuna.load_study(
        study_name=spec.name,
        storage=backend.storage,
        sampler=fixed or _sampler(spec, ordinal, 0, random_only=False),
        pruner=sampling.make_pruner(spec.pruner),
    )
    for attempt in range(max_attempts + FALLBACK_ATTEMPTS):
        views = _views(spec, space, names, study.get_trials(deepcopy=False))
        fallback = attempt >= max_attempts
        if grid is not None:
            held = {v.key for v in views if v.holds and v.valid and v.key is not None}
            waiting = any(v.state is TrialState.WAITING for v in views)
            if len(held) >= grid.size and not waiting:
                return Exhausted(grid.exhausted_reason(views))
            if fallback:
                params = grid.unseen(held, _rng(spec, ordinal, attempt))
                study.enqueue_trial(params, user_attrs={UNSEEN_FILL: True})
        if attempt and (fallback or fixed is None):
            study.sampler = fixed or _sampler(spec, ordinal, attempt, random_only=fallback)
        trial = study.ask(space)
        holder = _settled_holder(study, spec, space, names, trial)
        if holder is None:
            return trial
        logger.info(
            "study %s: trial %d drew the params of trial %d; asking again",
            spec.name,
            trial.number,
            holder,
        )
        trial.set_user_attr(DUPLICATE_OF, holder)
        tell(study, trial.number, state=TrialState.FAIL)
    asks = max_attempts + FALLBACK_ATTEMPTS
    return Exhausted(f"no params unlike those of the study's trials were found in {asks} asks")


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


def _fixed_sampler(backend: Backend, spec: StudySpec) -> optuna.samplers.BaseSampler | None:
    """The one sampler of every ask for algorithms whose seed must not change (see above)."""
    algorithm = spec.hyperparameters.algorithm
    if algorithm is Algorithm.GRID_SEARCH:
        return sampling.make_sampler(spec)
    if algorithm is Algorithm.QMC:
        seed = spec.seed
        if seed is None:
            study_id = backend.storage.get_study_id_from_name(spec.name)
            digest = hashlib.sha256(f"qmc:{spec.name}:{study_id}".encode()).digest()
            seed = int.from_bytes(digest[:4], "big")
        return sampling.make_sampler(spec.model_copy(update={"seed": seed}))
    return None


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


def _views(
    spec: StudySpec,
    space: Mapping[str, BaseDistribution],
    names: Sequence[str],
    trials: Sequence[FrozenTrial],
) -> list[_View]:
    return [_view(spec, space, names, t) for t in trials]


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
    complete = all(name in flags for name in names)
    duplicate = trial.state is TrialState.FAIL and DUPLICATE_OF in trial.user_attrs
    return _View(
        number=trial.number,
        trial_id=trial._trial_id,
        state=trial.state,
        flags=flags,
        key=tuple(flags[n] for n in names) if complete else None,
        valid=valid,
        exempt=fixed is not None and not trial.user_attrs.get(UNSEEN_FILL),
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


def _settled_holder(
    study: optuna.Study,
    spec: StudySpec,
    space: Mapping[str, BaseDistribution],
    names: Sequence[str],
    trial: optuna.trial.Trial,
) -> int | None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        views = _views(spec, space, names, study.get_trials(deepcopy=False))
        ours = next(v for v in views if v.trial_id == trial._trial_id)
        if ours.exempt:
            return None
        holder = _holder(views, ours)
        if not isinstance(holder, _Unsettled):
            return holder
        if time.monotonic() >= deadline:
            logger.warning(
                "study %s: an earlier trial is still writing its params after %.1f s; "
                "trial %d is kept",
                spec.name,
                SETTLE_SECONDS,
                trial.number,
            )
            return None
        time.sleep(0.02)


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
        holding = [v for v in views if v.holds and v.valid and v.key is not None]
        done = {v.key for v in holding if v.state is not TrialState.FAIL}
        running = {v.key for v in holding if v.state is TrialState.RUNNING}
        failed = {v.key for v in holding} - done
        reason = f"the search space is exhausted: all {self.size} combinations have been run"
        if running:
            reason += f" or are running ({len(running)} running)"
        if failed:
            reason += (
                f"; {len(failed)} of them only in failed trials (`tuner retry` runs those again)"
            )
        return reason
