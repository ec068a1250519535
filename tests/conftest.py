"""
Shared fixtures.  Under CI=true a missing service (PostgreSQL, Redis) fails the
test; elsewhere too: these tests need real things, and silence would hide it.
"""

from __future__ import annotations

import socket

import pytest

from tests.support.pg import PgCluster


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def service_pg() -> str:
    """The machine's PostgreSQL (trust auth) on 127.0.0.1:5432."""
    if not _reachable("127.0.0.1", 5432):
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (required)")
    return "127.0.0.1:5432"


@pytest.fixture(scope="session")
def redis_service() -> str:
    """The machine's Redis on 127.0.0.1:6379."""
    if not _reachable("127.0.0.1", 6379):
        pytest.fail("Redis is not running on 127.0.0.1:6379 (required)")
    return "127.0.0.1:6379"


@pytest.fixture(scope="session")
def scram_pg():
    """A throwaway cluster with SCRAM-SHA-256 auth (user postgres, password 'password')."""
    cluster = PgCluster(auth="scram-sha-256").init().start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def fresh_pg():
    """A trust cluster per test, for tests that stop or kill their backend."""
    cluster = PgCluster(auth="trust").init().start()
    yield cluster
    cluster.destroy()
