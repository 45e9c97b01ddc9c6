"""Shared test configuration: one compute thread per test worker, deterministic hypothesis."""

import os

# pytest-xdist runs one worker per core; a multi-threaded torch/BLAS in each worker would
# oversubscribe the cores many times over (small ops slow down by 10x). Set before torch loads;
# subprocesses started by tests (training runs, notebook kernels) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from hypothesis import HealthCheck, settings

# "ci": derandomised, so a green run stays green; "dev": random search for new counterexamples.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
