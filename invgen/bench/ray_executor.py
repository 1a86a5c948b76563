"""Run benchmark blocks as Ray tasks; results come back to the driver, which alone writes the SQLite store.

Each block travels with its frozen ``x`` and ``y`` tensors, so workers need the invgen installation (and the
plugins the suite names) but no shared filesystem. Environment variables the metrics and datasets read
(``INVGEN_DATA``, ``INVGEN_LPIPS_WEIGHTS``) are forwarded to the workers through the runtime environment.

Local use starts a private Ray instance; a real cluster is reached with ``address="ray://HEAD:10001"`` (or the
``RAY_ADDRESS`` environment variable), see the README.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from invgen.errors import InvgenError

FORWARDED_ENV = ("INVGEN_DATA", "INVGEN_LPIPS_WEIGHTS", "INVGEN_TEST_THREADS")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InvgenError("the ray executor needs Ray: pip install 'invgen[ray]'") from None
    return ray


def execute_on_ray(
    blocks: Iterable[Any],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    max_in_flight: int = 64,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
) -> Iterator[Any]:
    """Execute blocks as Ray tasks and yield their results as they finish (in completion order).

    Args:
        blocks: :class:`invgen.bench.runner.Block` payloads, taken from the iterable only as tasks are submitted (at
            most ``max_in_flight`` ahead), so a runner that claims blocks as they are taken holds no more than that.
        address: a cluster address; None starts (or joins, if ``RAY_ADDRESS`` is set) a local instance.
        num_cpus: CPUs of a locally started instance (default: all).
        max_in_flight: tasks submitted ahead of the results collected (bounds driver memory).
        cpus_per_task, gpus_per_task: the resources each block asks for.
    """
    ray = _import_ray()
    queue = iter(blocks)
    first = next(queue, None)
    if first is None:  # nothing to run: no Ray instance to start
        return
    started_here = False
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            runtime_env={"env_vars": env},
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
        started_here = True
    remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(_execute_in_worker)
    try:
        pending: list[Any] = [remote.remote(first)]
        more = True
        while more or pending:
            while more and len(pending) < max_in_flight:
                block = next(queue, None)
                if block is None:
                    more = False
                else:
                    pending.append(remote.remote(block))
            if not pending:
                break
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                yield ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


def _execute_in_worker(block: Any) -> Any:
    import torch

    from invgen.bench.runner import execute_block

    threads = os.environ.get("INVGEN_TEST_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    return execute_block(block)
