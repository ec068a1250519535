"""
The plugin host against real plugin processes (tests/support/plugins/echo_plugin.py).

Approach: a Twisted reactor runs once per process and pytest cannot drive
trial's asynchronous TestCase reliably, so every scenario runs in its own
interpreter (tests/support/plugins/scenario.py, under C{task.react}) and prints
one JSON object; these tests assert on it.  Scenarios poll with deadlines,
never sleep, and use short periods (0.2 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).resolve().parents[1] / "support" / "plugins" / "scenario.py"


def run_scenario(name: str, workdir: Path, reactor: str = "epoll") -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(SCENARIO), name, str(workdir), "--reactor", reactor],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, (
        f"scenario {name} failed (rc={proc.returncode})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return json.loads(lines[-1])


@pytest.mark.parametrize("reactor, transport", [("epoll", "sync"), ("asyncio", "aio")])
def test_load_and_hook_round_trip(tmp_path: Path, reactor: str, transport: str) -> None:
    out = run_scenario("roundtrip", tmp_path, reactor)
    assert out["transport"] == transport
    # a disabled entry before it still takes index 0
    assert out["priority"] == 1001
    # enum numbers -> our names; 1000 and the string "HOOK_NAME_ON_TICK" are ignored
    assert out["hooks"] == ["onClosed", "onTrafficFromClient", "onTrafficFromServer"]
    assert out["metadata"]["hooks"] == [16, 18, 14]
    assert out["metadata"]["config"] == {"answer": "42"}  # non-string config values dropped
    assert out["metadata"]["id"]["version"] == "0.1.0"
    assert out["socket_dir_mode"] == "0o700" and out["socket_in_dir"]
    assert out["ping"] is True
    assert out["request_intact"] and out["payload_intact"]
    assert out["echo"]["metadata"] == {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    assert out["echo"]["deadline"] is True
    assert out["big_intact"], "an 8 MB payload must pass (2 GB limits, not grpcio's 4 MB)"
    assert out["deadline"] == "DEADLINE_EXCEEDED"
    assert out["stdio_relayed"], "GRPCStdio data must reach our logs"
    # stop: GRPCController.Shutdown reached the plugin, the process is gone, the private dir too
    assert out["shutdown_logged"]
    assert out["alive_after_stop"] is False and out["socket_dir_exists"] is False
    assert out["registry_events"][0][:3] == ["register", "echo-plugin", 1001]
    assert out["registry_events"][-1] == ["unregister", "echo-plugin"]
    assert out["errors"] == []


def test_stderr_hclog_lines_are_relayed_with_plugin_field(tmp_path: Path) -> None:
    logs = run_scenario("roundtrip", tmp_path)["logs"]
    serving = [e for e in logs if e["text"] == "echo plugin serving"]
    assert serving and serving[0]["level"] == "info"
    assert serving[0]["plugin"] == "echo-plugin" and serving[0]["answer"] == 42
    assert serving[0]["module"] == "echo"
    plain = [e for e in logs if e["text"] == "a plain prefixed line"]
    assert plain and plain[0]["level"] == "warn"


def test_each_broken_plugin_is_refused_with_one_line_and_the_rest_loads(tmp_path: Path) -> None:
    out = run_scenario("failures", tmp_path)
    assert out["loaded"] == [["good", 1009]]
    assert out["good_ping"] is True
    refusals = out["refusals"]
    expected = {
        "missing": "does not exist",
        "badsum": "checksum mismatch",
        "nosum": "no checksum configured",
        "silent": "no handshake line within 6s (startTimeout); killed it",
        "garbage": "unrecognized handshake line",
        "badversion": "unsupported plugin protocol version '2'",
        "failconfig": "GetPluginConfig failed: INTERNAL: config exploded",
        "tls": "AutoMTLS",
        "exits": "exited (exit code 3) before its handshake line",
    }
    for name, problem in expected.items():
        ours = [line for line in refusals.get(name, []) if line.startswith(f"plugin {name} not loaded")]
        assert len(ours) == 1 and problem in ours[0], (name, refusals.get(name))
    assert "good" not in refusals
    # refused processes are killed and their private directories removed
    assert out["left_running"] == [] and out["dirs_left"] == []
    assert out["good_alive_after_stop"] is False
    # plugins start concurrently: the silent one's timeout (6 s) is paid once, not per plugin
    assert out["load_seconds"] < 6.0 * 3


@pytest.mark.parametrize("reactor", ["epoll", "asyncio"])
def test_crashed_plugin_is_reloaded_with_its_priority(tmp_path: Path, reactor: str) -> None:
    out = run_scenario("crash", tmp_path, reactor)
    assert out["priority_before"] == 1002
    assert out["reloaded"], out
    assert out["priority_after"] == 1002  # GatewayD would reset it to 1000
    assert out["new_pid_alive"] and out["ping_after"] is True
    assert out["registry_events"] == [["register", "echo", 1002], ["unregister", "echo"],
                                      ["register", "echo", 1002]]
    assert len(out["errors"]) == 1 and "failed its health check" in out["errors"][0]


def test_crashed_plugin_without_reload_is_unregistered(tmp_path: Path) -> None:
    out = run_scenario("no_reload", tmp_path)
    assert out["unregistered"] and out["plugins_after"] == 0
    assert out["errors"] == ["plugin echo failed its health check (process ended: signal 9); unregistered"]


def test_metrics_merger_labels_plugin_samples(tmp_path: Path) -> None:
    out = run_scenario("metrics", tmp_path)
    assert out["metrics_socket"] == str(tmp_path / "metrics.sock")
    assert out["merged"], out
    text = out["text"]
    assert 'gatewayd_on_traffic_from_client_total{plugin="echo_plugin"} 7.0' in text
    assert 'echo_up{kind="test",plugin="echo_plugin"} 1.0' in text
    assert out["text_after_stop"] == ""
