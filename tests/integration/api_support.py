"""
A real gateway process with its admin API on free ports, for the admin API's
integration tests (test_api_gateway.py, test_status_page.py).

The process is `python -m tests.integration.api_runner run ...`, which is
`gatewayd run` plus the admin API until GatewayService adds it itself (then
the runner adds nothing).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.gateway import ROOT, Gateway, base_config
from tests.support.plugins import make_plugin_executable
from tests.support.ports import free_port

TOKEN = "itest-token-7Hq2pX"
#: Every secret planted in the two config files; none may appear in an answer or a log line.
SECRETS = (TOKEN, "itest-pg-password-Zr8", "itest-env-key-K4v", "itest-cfg-key-M1n",
           "itest-arg-secret-P9w")


def api_config(backend: str = "127.0.0.1:5432", *, token: str | None = TOKEN,
               pool_size: int = 2) -> dict[str, Any]:
    config = base_config({"writes": backend}, pool_size=pool_size, drainTimeout="1s")
    config["clients"]["default"]["writes"]["startupParams"] = {
        "user": "postgres", "database": "postgres", "password": "itest-pg-password-Zr8"}
    config["loggers"]["default"]["level"] = "debug"  # the API's access log too
    config["api"] = {"enabled": True, "httpAddress": "127.0.0.1:0", "grpcAddress": "127.0.0.1:0"}
    if token:
        config["api"]["token"] = token
    return config


def plugins_config(workdir: Path) -> dict[str, Any]:
    path, checksum = make_plugin_executable(workdir)
    return {
        "healthCheckPeriod": "1s",
        "plugins": [
            {"name": "secret-plugin", "module": "tests.integration.api_runner:SecretPlugin",
             "args": ["--password=itest-arg-secret-P9w"],
             "config": {"apiKey": "itest-cfg-key-M1n", "region": "eu"}},
            {"name": "echo", "localPath": path, "checksum": checksum,
             "env": ["API_KEY=itest-env-key-K4v", "REGION=eu"]},
        ],
    }


class ApiGateway(Gateway):
    """L{Gateway} with the admin API on free ports; C{start()} also waits for them."""

    def __init__(self, config: dict[str, Any], plugins: dict[str, Any] | None = None,
                 workdir: Path | None = None, env: dict[str, str] | None = None) -> None:
        super().__init__(config, plugins, workdir, env=env)
        self.http_port = 0
        self.grpc_port = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 30.0) -> ApiGateway:
        for _ in range(3):
            self.http_port, self.grpc_port = free_port(), free_port()
            self.config["api"]["httpAddress"] = f"127.0.0.1:{self.http_port}"
            self.config["api"]["grpcAddress"] = f"127.0.0.1:{self.grpc_port}"
            cfg, plugins = self.write_config()
            env = {k: v for k, v in os.environ.items() if k != "GATEWAYD_API_TOKEN"}
            env.update(PYTHONUNBUFFERED="1", **self.env)
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.integration.api_runner", "run", "-c", str(cfg),
                     "-p", str(plugins)], cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                    env=env)
            if self._wait_ready(timeout):
                return self
            code = self.proc.poll()
            if code is None:
                self.stop()
                raise AssertionError(f"gateway did not start in {timeout}s:\n{self.output()}")
            if "Address already in use" not in self.output():
                raise AssertionError(f"gateway exited with {code}:\n{self.output()}")
            self.ports.clear()
        raise AssertionError("gateway could not bind free ports three times")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pending = {*self.ports.values(), self.http_port, self.grpc_port}
        while pending and time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            for port in list(pending):
                with socket.socket() as s:
                    s.settimeout(0.5)
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        pending.discard(port)
            if pending:
                time.sleep(0.05)
        return not pending

    def get(self, path: str, token: str | None = TOKEN, method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request: (status, lower-cased headers, body); errors are answers too."""
        request = urllib.request.Request(self.http + path, method=method,
                                         headers=dict(headers or {}))
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, {k.lower(): v for k, v in answer.headers.items()}, \
                    answer.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def json(self, path: str, **kwargs: Any) -> Any:
        status, headers, body = self.get(path, **kwargs)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def wait_for(self, predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
        """Poll C{predicate()} until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not met in {timeout}s:\n{self.output()[-3000:]}")
            time.sleep(0.05)
