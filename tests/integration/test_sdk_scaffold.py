"""
The scaffolded plugin project works: its own tests pass, it loads in-process,
and its entry script performs the go-plugin handshake.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from gatewayd import pgwire
from gatewayd.act import ActRegistry
from gatewayd.config.schema import PluginEntry
from gatewayd.hooks.registry import HookRegistry
from gatewayd.sdk.scaffold import main, scaffold
from gatewayd.sdk.server import MAGIC_COOKIE_VALUE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def env_for(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(project), str(ROOT), env.get("PYTHONPATH", "")])
    for key in ("GATEWAYD_PLUGIN", "PLUGIN_CLIENT_CERT", "MAGIC_COOKIE_KEY", "MAGIC_COOKIE_VALUE"):
        env.pop(key, None)
    return env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return scaffold(tmp_path, "acme-audit", description="Audits queries", authors=["Ada"],
                    license="MIT", remote_url="github.com/acme/acme-audit", hook="OnTrafficFromClient")


def test_layout(project: Path) -> None:
    for relative in ("pyproject.toml", "README.md", "Makefile", "gatewayd_plugin.yaml",
                     "acme_audit/__init__.py", "acme_audit/plugin.py", "tests/test_plugin.py",
                     "bin/acme-audit"):
        assert (project / relative).is_file(), relative
    assert os.access(project / "bin" / "acme-audit", os.X_OK)
    entry = (project / "gatewayd_plugin.yaml").read_text()
    assert "sha256sum bin/acme-audit" in entry and "module: acme_audit.plugin:AcmeAudit" in entry


def test_generated_tests_pass(project: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=project, env=env_for(project), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_loads_in_process(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatewayd.sdk.inprocess import load_inprocess

    monkeypatch.syspath_prepend(str(project))
    clock = Clock()
    plugin = load_inprocess(PluginEntry(name="acme-audit", module="acme_audit.plugin:AcmeAudit"),
                            1000, clock)
    assert plugin.hooks == {"onTrafficFromClient"}
    assert plugin.metadata["authors"] == ["Ada"]
    registry = HookRegistry(clock, ActRegistry(clock=clock))
    registry.register(plugin)
    payload = {"request": pgwire.query("SELECT 1")}
    box: list = []
    registry.run("onTrafficFromClient", payload).addBoth(box.append)
    assert box == [payload]


def test_entry_script_handshakes(project: Path, tmp_path: Path) -> None:
    env = env_for(project)
    env.update({"GATEWAYD_PLUGIN": MAGIC_COOKIE_VALUE, "PLUGIN_UNIX_SOCKET_DIR": str(tmp_path)})
    proc = subprocess.Popen([sys.executable, str(project / "bin" / "acme-audit")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        line = b""
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        assert line.startswith(b"1|1|unix|") and line.endswith(b"|grpc|\n"), line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("Bad Name", "-x", "x--y"):
        with pytest.raises(ValueError):
            scaffold(tmp_path, bad)
    with pytest.raises(ValueError):
        scaffold(tmp_path, "ok", hook="onNothing")
    with pytest.raises(ValueError):
        scaffold(tmp_path, "ok", description='say "hi"')
    scaffold(tmp_path, "twice")
    with pytest.raises(FileExistsError):
        scaffold(tmp_path, "twice")
    assert main(["twice", "-o", str(tmp_path)]) == 2
    assert main(["cli-made", "-o", str(tmp_path), "--hook", "onTick"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli-made")
    assert "@hook(\"onTick\")" in (tmp_path / "cli-made" / "cli_made" / "plugin.py").read_text()
