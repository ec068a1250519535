"""Rendered YAML (gatewayd.config.render) and the shipped etc/ files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gatewayd.config import load
from gatewayd.config.render import _scalar, render_global, render_plugins
from gatewayd.config.schema import GlobalConfig, PluginsConfig
from gatewayd.config.shape import OBJECT, slots

ROOT = Path(__file__).resolve().parents[2]


def load_rendered(tmp_path: Path, example: str = "default"):
    glob = tmp_path / "gatewayd.yaml"
    glob.write_text(render_global(example))
    plugins = tmp_path / "gatewayd_plugins.yaml"
    plugins.write_text(render_plugins())
    return load(str(glob), str(plugins), env={})


def test_default_example_loads_and_is_the_safe_shipped_setup(tmp_path: Path) -> None:
    config = load_rendered(tmp_path)
    g = config.global_
    assert g.servers["default"].address == "127.0.0.1:15432"
    assert list(g.clients["default"]) == ["writes"]
    assert g.clients["default"]["writes"].address == "127.0.0.1:5432"
    assert g.pools["default"]["writes"].size == 10
    assert g.metrics["default"].address == "127.0.0.1:9090"
    assert (g.api.http_address, g.api.grpc_address) == ("127.0.0.1:18080", "127.0.0.1:19090")
    assert "0.0.0.0" not in re.sub(r"#.*", "", render_global())  # only in comments
    # apart from addresses, every value is GatewayD's default
    expected = GlobalConfig()
    expected.metrics["default"].address = "127.0.0.1:9090"
    expected.clients["default"]["writes"].address = "127.0.0.1:5432"
    expected.servers["default"].address = "127.0.0.1:15432"
    expected.api.http_address, expected.api.grpc_address = "127.0.0.1:18080", "127.0.0.1:19090"
    assert g == expected
    assert config.plugins == PluginsConfig()


def test_multi_pool_example(tmp_path: Path) -> None:
    config = load_rendered(tmp_path, "multi-pool")
    g = config.global_
    assert {b: c.address for b, c in g.clients["default"].items()} == {
        "writes": "127.0.0.1:5432", "reads": "127.0.0.1:5433"}
    assert list(g.pools["default"]) == list(g.proxies["default"]) == ["writes", "reads"]
    lb = g.servers["default"].load_balancer
    assert lb.strategy == "WEIGHTED_ROUND_ROBIN"
    default = [r for r in lb.load_balancing_rules if r.condition == "DEFAULT"][0]
    assert [(d.proxy_name, d.weight) for d in default.distribution] == [("writes", 70), ("reads", 30)]
    assert config.blocks("default") == ["writes", "reads"]


def test_unknown_example() -> None:
    with pytest.raises(ValueError, match="unknown example 'x'"):
        render_global("x")


def _keys(cls: type) -> set[str]:
    keys = set()
    for slot in slots(cls):
        keys.add(slot.key)
        if slot.cls is not None and slot.kind == OBJECT:
            keys |= _keys(slot.cls)
    return keys


@pytest.mark.parametrize("cls", [s.cls for s in slots(GlobalConfig) if s.key not in ("raft",)]
                         + [PluginsConfig])
def test_every_key_is_written_out_or_shown_as_an_example(cls: type) -> None:
    text = render_global("multi-pool") + render_plugins()
    for key in _keys(cls):
        assert re.search(rf"(^\s*(# )?(- )?|[{{,] ?){key}:", text, re.MULTILINE), key


def test_every_written_key_has_a_comment() -> None:
    """The first block of each object explains each of its keys."""
    for text in (render_global(), render_plugins()):
        rendered = text.splitlines()
        for previous, line in zip(rendered, rendered[1:]):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped.endswith(":"):
                continue
            assert "#" in line or previous.strip().startswith("#"), line


def test_rendered_text_is_plain_yaml_without_tags() -> None:
    for text in (render_global(), render_global("multi-pool"), render_plugins()):
        assert "!!" not in text
        assert isinstance(yaml.safe_load(text), dict)


def test_shipped_files_are_the_rendered_ones() -> None:
    """etc/ is generated: regenerate it with render_global()/render_plugins() when keys change."""
    assert (ROOT / "etc/gatewayd.yaml").read_text() == render_global()
    assert (ROOT / "etc/gatewayd_plugins.yaml").read_text() == render_plugins()


def test_strings_that_need_quotes_get_them() -> None:
    for value in ["", "1.2", "yes", "on", "null", "a: b", "# x", " lead", "it's", "123",
                  "application_name == \"x\"", "[x]", "{x}", "tab\there", "é", "*star", "&amp"]:
        assert yaml.safe_load(f"k: {_scalar(value)}") == {"k": value}, value
