"""What plugin and solver authors use to check their work.

* :func:`check_prior` (and :func:`check_registered`, ``invgen check-prior NAME``): the conformance checks of a prior
  plugin against the contracts of its capabilities (:mod:`invgen.testing.check_prior`).
* the exact-posterior oracle (:mod:`invgen.testing.oracle`), imported on use only (``import invgen.testing.oracle``);
  it needs the built-in analytic plugin (``invgen_plugins``).
"""

from invgen.testing.check_prior import check_prior, check_registered
from invgen.testing.report import CheckResult, PriorReport

__all__ = ["CheckResult", "PriorReport", "check_prior", "check_registered"]
