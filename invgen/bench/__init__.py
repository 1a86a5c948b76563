"""The benchmark harness: suites (YAML), frozen degraded datasets, a resumable SQLite store, reports, executors.

``invgen bench validate|plan|degrade|run|report`` drives it from the command line; :func:`run_suite` and
:func:`invgen.bench.report.write_report` from Python.
"""

from __future__ import annotations

from invgen.bench.runner import RunSummary, run_suite
from invgen.bench.store import Store
from invgen.bench.suite import Suite, SuiteError, load_suite, parse_suite

__all__ = ["RunSummary", "Store", "Suite", "SuiteError", "load_suite", "parse_suite", "run_suite"]
