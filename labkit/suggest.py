"""Close-match suggestions for misspelt names, shared by every manifest reader.

One place so every kind words the fix the same way ("did you mean 'containerConcurrency'?").
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]


def closest(word: object, choices: Iterable[str]) -> str | None:
    """The valid name nearest to `word` (case-insensitive first: `storageURI` -> `storageUri`),
    or None when nothing is close enough to be a likely typo."""
    options = sorted(set(choices))
    by_lower = {c.lower(): c for c in options}
    if str(word).lower() in by_lower:
        return by_lower[str(word).lower()]
    match = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """"did you mean 'x'?" for the closest choice, or "" when none is close."""
    match = closest(word, choices)
    return f"did you mean {match!r}?" if match else ""
