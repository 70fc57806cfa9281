"""Hypothesis settings profiles, chosen with HYPOTHESIS_PROFILE.

- `dev` (default): quick local runs.
- `ci`: what .ci/run uses; stateful machines run at least 200 examples.
- `deep`: long local runs before a release (`HYPOTHESIS_PROFILE=deep`).
"""

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

settings.register_profile("dev", max_examples=50, stateful_step_count=30, **_COMMON)
settings.register_profile(
    "ci", max_examples=200, stateful_step_count=40, derandomize=False, print_blob=True, **_COMMON
)
settings.register_profile("deep", max_examples=2000, stateful_step_count=60, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
