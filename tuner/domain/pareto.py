"""Pareto dominance over objective vectors: the front, hypervolume, and the early-stopping rule
for several objectives.

Pure functions over NumPy arrays, with every objective turned into "smaller is better" first
(`to_minimize`). Optuna computes fronts only over its own trials (and its helpers are private);
the tuner ranks its own rows, so the few lines are here, in the domain: the front (`study`), the
early-stopping rule (`engine`) and the no-progress rule (`persistence.budget`) share them. The
front is a sort and one pass per member (O(n * front size)), not the O(n^2) comparison of every
pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from tuner.domain.spec import Goal

Points = NDArray[np.float64]


def to_minimize(values: Sequence[Sequence[float]], goals: Sequence[Goal]) -> Points:
    """The vectors with MAXIMIZE objectives negated: smaller is better in every column."""
    points = np.asarray(values, dtype=np.float64).reshape(len(values), len(goals))
    signs = np.array([-1.0 if g is Goal.MAXIMIZE else 1.0 for g in goals])
    minimized: Points = points * signs
    return minimized


def dominates(a: Points, b: Points) -> bool:
    """Whether `a` is at least as good as `b` everywhere and better somewhere (minimizing)."""
    return bool(np.all(a <= b) and np.any(a < b))


def nondominated(points: Points) -> NDArray[np.bool_]:
    """A mask of the rows no other row dominates (equal rows are all on the front)."""
    count = len(points)
    on_front = np.zeros(count, dtype=bool)
    if count == 0:
        return on_front
    # In lexicographic order a row can only be dominated by rows before it.
    order = np.lexsort(points.T[::-1])
    front: list[int] = []
    for index in order:
        row = points[index]
        if any(dominates(points[kept], row) for kept in front):
            continue
        front.append(int(index))
        on_front[index] = True
    return on_front


def dominated_by_count(point: Points, others: Points) -> int:
    """How many rows of `others` dominate `point`."""
    if len(others) == 0:
        return 0
    at_least = np.all(others <= point, axis=1)
    better = np.any(others < point, axis=1)
    return int(np.count_nonzero(at_least & better))


def hypervolume(points: Points, reference: Points) -> float:
    """The volume dominated by `points` and bounded by `reference` (minimizing).

    Exact in two dimensions (a sweep); in more, by slicing on the first objective and
    recursing, which is exact and fast enough for the fronts a study has (tens of points).
    """
    inside = points[np.all(points < reference, axis=1)]
    if len(inside) == 0:
        return 0.0
    inside = inside[nondominated(inside)]
    if inside.shape[1] == 1:
        return float(reference[0] - inside[:, 0].min())
    if inside.shape[1] == 2:
        ordered = inside[np.argsort(inside[:, 0])]
        volume, ceiling = 0.0, float(reference[1])
        for x, y in ordered:
            if y < ceiling:
                volume += (float(reference[0]) - float(x)) * (ceiling - float(y))
                ceiling = float(y)
        return volume
    ordered = inside[np.argsort(inside[:, 0])]
    volume = 0.0
    for i, row in enumerate(ordered):
        upper = ordered[i + 1, 0] if i + 1 < len(ordered) else reference[0]
        width = float(upper - row[0])
        if width > 0:
            volume += width * hypervolume(ordered[: i + 1, 1:], reference[1:])
    return volume
