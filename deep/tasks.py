"""Calls placed as the sweep's trials are: one after the other in this process, or as Ray
tasks on a local instance or a cluster. ``deep.sweep`` and ``deep.parity`` place their runs
with it.

Each call is one Ray *task* (``ray.remote(num_cpus=…, num_gpus=…)``), not Ray Tune: the runs
are fixed and every one runs to its end, and their folders are the only record of progress.
A worker exits as soon as its raylet is gone, so a killed driver leaves no orphan training on;
its last checkpoint is all the next call needs. A cluster ``--address`` that does not answer
is refused in seconds, before Ray's own minutes of retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "INSTALL_HINT",
    "PlacementError",
    "check_address",
    "map_calls",
    "ray_map",
    "ray_session",
    "require_ray",
]

INSTALL_HINT = "pip install -e .[sweep]"


class PlacementError(ValueError):
    """Ray is missing, the cluster does not answer, or the machine is too small."""


def _exit_with_parent(poll_seconds: float = 0.5) -> None:
    """Exit this process (a Ray worker) as soon as its parent, the raylet, is gone.

    When the driver is killed its raylet dies with it, but a worker busy in a trial would
    train on, orphaned, to the trial's end; its last checkpoint is all the next sweep needs.
    """
    import threading

    if any(t.name == "exit-with-raylet" for t in threading.enumerate()):
        return  # a worker runs many tasks; one watcher is enough
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-raylet", daemon=True).start()


def _ray_task(fn: Callable[..., Any], *args: Any) -> Any:
    """What every Ray task runs: ``fn(*args)`` in a worker that dies with its raylet."""
    _exit_with_parent()
    return fn(*args)


def require_ray() -> None:
    """PlacementError naming the install command when Ray does not import."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise PlacementError(
            f"Ray is not installed: {INSTALL_HINT} (or run in this process with --workers 1)"
        ) from None


def check_address(address: str, timeout: float = 3.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) cluster address must accept a connection
    within ``timeout`` seconds, else :class:`PlacementError`; ``auto`` is left to Ray."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        if address != "auto":
            raise PlacementError(
                f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT"
            )
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as e:
        raise PlacementError(
            f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
            "`ray start --head`, or leave --address out to run locally"
        ) from None


@contextlib.contextmanager
def ray_session(workers: int | None, address: str | None, cpus: int, gpus: float) -> Iterator[Any]:
    """``ray`` initialised (a local instance on ``workers × cpus`` CPUs, or the cluster at
    ``address``) and shut down at the end; a local machine too small for one trial is a
    :class:`PlacementError` (its trials would wait forever)."""
    import ray

    if address is not None:
        check_address(address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(
            num_cpus=workers * cpus if workers is not None else None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    try:
        if address is None:
            have = ray.cluster_resources()
            for name, need in (("CPU", cpus), ("GPU", gpus)):
                if need > have.get(name, 0.0):
                    raise PlacementError(
                        f"a trial needs {need:g} {name}s, this machine has {have.get(name, 0.0):g}"
                    )
        yield ray
    finally:
        ray.shutdown()


def ray_map(
    ray: Any, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], cpus: int, gpus: float
) -> Iterator[tuple[int, Any]]:
    """``fn(*args)`` for every ``args`` of ``calls``, each a Ray task; ``(index, result)`` in
    the order they finish, the exception in place of the result of a task that failed."""
    # Ray retries a task whose worker died; a retried run resumes from its checkpoint.
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=2)(_ray_task)
    index = {task.remote(fn, *args): i for i, args in enumerate(calls)}
    pending = list(index)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            try:
                yield index[ref], ray.get(ref)
            except ray.exceptions.RayError as e:  # fn raised, or its worker died too often
                yield index[ref], e


def map_calls(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    workers: int = 1,
    address: str | None = None,
    cpus_per_call: int = 1,
) -> Iterator[tuple[int, Any]]:
    """``fn(*args)`` for every ``args`` of ``calls``, placed as the sweep's trials are: one
    after the other in this process (``workers == 1``, no ``address`` nor ``RAY_ADDRESS``),
    else as Ray tasks on a local instance of ``workers × cpus_per_call`` CPUs or on the
    cluster at ``address``. Yields ``(index, result)`` in the order the calls finish; in
    this process an exception propagates, on Ray it is yielded in place of the result.
    ``fn`` and the arguments must pickle (a module-level function, plain data)."""
    if workers < 1 or cpus_per_call < 1:
        raise PlacementError(
            f"workers and CPUs per call must be >= 1, got {workers}, {cpus_per_call}"
        )
    address = address or os.environ.get("RAY_ADDRESS") or None
    if workers == 1 and address is None:
        for i, args in enumerate(calls):
            yield i, fn(*args)
        return
    require_ray()
    with ray_session(None if address else workers, address, cpus_per_call, 0.0) as ray:
        yield from ray_map(ray, fn, calls, cpus_per_call, 0.0)
