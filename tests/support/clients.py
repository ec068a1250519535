"""
Real clients against the gateway: psql, pgbench, and throwaway databases on
the machine's PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from typing import Iterator

import psycopg

from tests.support.pg import SERVICE_DSN

CLIENT_ENV = {"PGSSLMODE": "disable", "PGGSSENCMODE": "disable", "PGCONNECT_TIMEOUT": "15",
              "PGAPPNAME": "gatewayd-tests"}


def env(password: str = "password", **extra: str) -> dict[str, str]:
    return dict(os.environ, PGPASSWORD=password, **CLIENT_ENV, **extra)


def psql(dsn: str, sql: str, *, timeout: float = 60.0, check: bool = True,
         extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """C{psql -X -At -c sql} against C{dsn}; raises with stderr when it fails and C{check}."""
    out = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
                         capture_output=True, text=True, timeout=timeout,
                         env=env(**(extra_env or {})))
    if check and out.returncode != 0:
        raise AssertionError(f"psql failed ({out.returncode}): {out.stderr}")
    return out


@dataclass
class PgbenchResult:
    returncode: int
    processed: int
    failed: int | None
    output: str


def pgbench(port: int, dbname: str, *args: str, user: str = "postgres",
            password: str = "password", timeout: float = 120.0) -> PgbenchResult:
    """Run pgbench against 127.0.0.1:C{port} and parse its summary."""
    out = subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", user, *args, dbname],
                         capture_output=True, text=True, timeout=timeout, env=env(password))
    text = out.stdout + out.stderr
    processed = re.search(r"number of transactions actually processed: (\d+)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    return PgbenchResult(out.returncode, int(processed.group(1)) if processed else 0,
                         int(failed.group(1)) if failed else None, text)


@contextlib.contextmanager
def fresh_database(dsn: str = SERVICE_DSN, prefix: str = "gw_core") -> Iterator[str]:
    """Create a uniquely named database on the server of C{dsn}; drop it (forcefully) after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
