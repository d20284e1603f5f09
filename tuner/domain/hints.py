""" "Did you mean ...?": the closest known word to a misspelt key, enum value or trainer name.

`difflib.get_close_matches` on case-folded words, so `MINIMISE` finds `MINIMIZE` and
`maxparalleltrials` finds `maxParallelTrials`; a word with no close match gets no hint.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: How alike two words must be (difflib's ratio) for one to be suggested for the other.
CUTOFF = 0.6


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The known word closest to `word`, None if none is close."""
    folded: dict[str, str] = {}
    for choice in choices:
        folded.setdefault(choice.casefold(), choice)
    found = difflib.get_close_matches(word.casefold(), list(folded), n=1, cutoff=CUTOFF)
    return folded[found[0]] if found else None


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`"; did you mean 'X'?"` for the closest choice, or "" (also for a non-string word)."""
    if not isinstance(word, str):
        return ""
    match = closest(word, choices)
    return f"; did you mean {match!r}?" if match is not None and match != word else ""


def unknown_field(key: str, known: Iterable[str]) -> str:
    """The reason for a key no model has: a suggestion when one is close."""
    match = closest(key, known)
    if match is not None and match != key:
        return f"unknown field; did you mean {match!r}?"
    return "unknown field (check its spelling)"
