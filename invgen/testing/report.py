"""The report of :func:`invgen.testing.check_prior`: one line per check, passed, failed or skipped, with its message."""

from __future__ import annotations

from dataclasses import dataclass, field

from invgen.errors import ConformanceError

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
_TAGS = {PASSED: "PASS", FAILED: "FAIL", SKIPPED: "skip"}


@dataclass(frozen=True)
class CheckResult:
    """One check of one prior.

    Attributes:
        name: ``"<capability or topic>.<what>"``, e.g. ``"generator.range"`` or ``"declaration.capabilities"``.
        status: ``"passed"``, ``"failed"`` or ``"skipped"``.
        message: what was measured; for a failure what was expected, what came and what to fix; for a skip why.
    """

    name: str
    status: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status != FAILED

    def __str__(self) -> str:
        return f"{_TAGS[self.status]}  {self.name}: {self.message}"


@dataclass
class PriorReport:
    """Every check run on one prior.

    Attributes:
        prior: the prior's name (its registry name, with the options it was built with when they matter).
        results: the checks in the order they ran.
        seconds: wall-clock time of the checks (without building the prior).

    Example:
        >>> report = check_prior(prior)  # doctest: +SKIP
        >>> report.ok, [c.name for c in report.failed]  # doctest: +SKIP
        (False, ['generator.range'])
        >>> print(report)  # doctest: +SKIP
    """

    prior: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no check failed (skipped checks do not count)."""
        return all(r.ok for r in self.results)

    @property
    def passed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == PASSED]

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def skipped(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == SKIPPED]

    def __getitem__(self, name: str) -> CheckResult:
        """The result of the check called ``name`` (KeyError listing the checks that ran, if none)."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no check {name!r} in the report of {self.prior!r}; ran: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [r.name for r in self.results]

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"{self.prior}: {verdict} ({len(self.passed)} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped, {self.seconds:.2f} s)"
        )

    def __str__(self) -> str:
        return "\n".join([self.summary(), *(f"  {r}" for r in self.results)])

    def raise_if_failed(self) -> PriorReport:
        """Raise :class:`~invgen.errors.ConformanceError` naming every failed check; return the report otherwise."""
        if not self.ok:
            lines = "\n".join(f"  {r}" for r in self.failed)
            raise ConformanceError(
                f"prior {self.prior!r} failed {len(self.failed)} check(s):\n{lines}", self.failed[0], self
            )
        return self
