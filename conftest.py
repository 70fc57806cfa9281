"""Hypothesis settings profiles, chosen with HYPOTHESIS_PROFILE.

- `dev` (default): quick local runs.
- `ci`: what .ci/run uses; stateful machines run 100 examples (the slower
  backends a share of that, see each module), the broken-backend budget too.
- `deep`: long local runs before a release (`HYPOTHESIS_PROFILE=deep`).
"""

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from meerkat_actor._pgcluster import TemporaryCluster, find_binaries

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

settings.register_profile("dev", max_examples=50, stateful_step_count=30, **_COMMON)
settings.register_profile(
    "ci", max_examples=100, stateful_step_count=40, derandomize=False, print_blob=True, **_COMMON
)
settings.register_profile("deep", max_examples=2000, stateful_step_count=60, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# --- a PostgreSQL server for the tests that need one ------------------------------------------
#
# `postgres_dsn` is a libpq connection string: `$MEERKAT_TEST_POSTGRES_DSN` if
# set, else a throwaway cluster started for this test session (initdb + pg_ctl
# from the machine's PostgreSQL binaries, on a Unix socket in a temporary
# directory, removed at the end). Without binaries the tests that need it are
# skipped, unless `$MEERKAT_REQUIRE_POSTGRES` is set (CI sets it): then they fail.

_postgres_cluster: list[TemporaryCluster] = []


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    configured = os.environ.get("MEERKAT_TEST_POSTGRES_DSN")
    if configured:
        yield configured
        return
    bindir = find_binaries()
    if bindir is None:
        reason = (
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found on PATH, in"
            " $MEERKAT_PG_BINDIR or in /usr/lib/postgresql/*/bin; .ci/run installs them"
        )
        if os.environ.get("MEERKAT_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    with TemporaryCluster(bindir) as cluster:
        os.environ["MEERKAT_TEST_POSTGRES_DSN"] = cluster.dsn
        _postgres_cluster.append(cluster)
        try:
            yield cluster.dsn
        finally:
            _postgres_cluster.remove(cluster)
            del os.environ["MEERKAT_TEST_POSTGRES_DSN"]


@pytest.fixture
def postgres_cluster(postgres_dsn: str) -> TemporaryCluster:
    """The throwaway cluster itself (for tests that stop and restart the
    server); skipped when the DSN came from the environment."""
    if not _postgres_cluster:
        pytest.skip("the PostgreSQL server is not one this test session started")
    return _postgres_cluster[0]
