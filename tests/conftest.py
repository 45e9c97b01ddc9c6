"""Shared test configuration: deterministic hypothesis profiles."""

import os

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
