"""The names a prior may declare: its capabilities and the kinds of ``log_prob`` it may return.

Kept free of torch so that :mod:`invgen.registry` can refuse a misspelled name at registration time without making
``import invgen`` heavier. :mod:`invgen.priors.base` re-exports :data:`CAPABILITIES`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CAPABILITIES = ("denoiser", "score", "log_density", "generator")
"""Every capability a prior may offer (see :mod:`invgen.priors.base` for each one's contract)."""

LOG_PROB_KINDS = ("exact", "bound", "unnormalized")
"""What ``log_prob`` returns: the exact log-density, a lower bound on it (an ELBO), or ``log p`` up to a constant."""


def unknown_names(
    names: Iterable[str], known: tuple[str, ...] = CAPABILITIES, what: str = "capability", plural: str = "capabilities"
) -> str | None:
    """A message naming the entries of ``names`` that are not in ``known`` (with close matches), or None if none.

    Example:
        >>> print(unknown_names(("denoiser", "scores")))
        unknown capability 'scores' (did you mean 'score'?); known capabilities: denoiser, score, log_density, ...
    """
    bad = [n for n in names if n not in known]
    if not bad:
        return None
    parts = []
    for name in bad:
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown {plural if len(bad) > 1 else what} {', '.join(parts)}; known {plural}: {', '.join(known)}"
