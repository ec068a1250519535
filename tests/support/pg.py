"""
Throwaway PostgreSQL clusters for tests: initdb + pg_ctl on a free port in a
temp dir, as the C{postgres} user when we run as root (initdb refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVICE_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _owner(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


@dataclass
class PgCluster:
    """
    One throwaway cluster.  C{auth} is C{trust}, C{scram-sha-256} or C{md5} for
    TCP connections; the superuser C{postgres} has password C{password}.
    """

    auth: str = "trust"
    ssl_cert: str | None = None
    ssl_key: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    port: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gwpg-")))
    password: str = "password"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def dsn(self, user: str = "postgres", dbname: str = "postgres") -> str:
        return (f"host=127.0.0.1 port={self.port} user={user} dbname={dbname} "
                f"password={self.password} sslmode=disable")

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_as_postgres(), *argv], check=check, capture_output=True,
                              text=True, cwd="/tmp")

    def init(self) -> PgCluster:
        self.root.chmod(0o755)
        _owner(self.root)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        _owner(pwfile)
        method = "trust" if self.auth == "trust" else self.auth
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", method,
                  "--pwfile", str(pwfile), "-E", "UTF8", "--no-sync")
        conf = {
            "listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{self.root}'",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "100", "shared_buffers": "32MB",
            "password_encryption": "'md5'" if self.auth == "md5" else "'scram-sha-256'",
        }
        if self.ssl_cert:
            for name, src in (("server.crt", self.ssl_cert), ("server.key", self.ssl_key)):
                dst = self.data / name
                shutil.copy(src, dst)
                dst.chmod(0o600)
                _owner(dst)
            conf.update({"ssl": "on", "ssl_cert_file": "'server.crt'",
                         "ssl_key_file": "'server.key'"})
        conf.update(self.settings)
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        return self

    def start(self) -> PgCluster:
        for _ in range(5):
            self.port = self.port or free_port()
            result = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o",
                               f"-p {self.port}", "-l", str(self.root / "log"), "-w", "-t", "30",
                               "start", check=False)
            if result.returncode == 0:
                return self
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            if "could not bind" not in log and "already in use" not in log:
                raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{log}")
            self.port = 0
        raise RuntimeError("no free port for PostgreSQL")

    def stop(self, mode: str = "fast", timeout: int | None = None) -> bool:
        """Stop and wait (up to C{timeout} s, pg_ctl's 60 by default); False if still running."""
        limit = ["-t", str(timeout)] if timeout else []
        return self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", *limit,
                         "stop", check=False).returncode == 0

    def restart(self) -> None:
        self.stop("immediate")
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL directly (not through the gateway) and return the unaligned output."""
        env = dict(os.environ, PGPASSWORD=self.password)
        out = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d",
                              self.dsn(dbname=dbname), "-c", sql], env=env, check=True,
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip()


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "") -> None:
    """Poll C{predicate} until true or fail after C{timeout}: no fixed sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)
