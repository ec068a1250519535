"""In-process test plugin: OnConfigLoaded returns the keys given in its config."""

from __future__ import annotations

from typing import Any

from gatewayd.sdk import Plugin, hook


class ConfigChanger(Plugin):
    """Sets every flattened key of C{config["set"]} in the OnConfigLoaded result."""

    name = "test-config-changer"
    version = "0.1.0"

    @hook("onConfigLoaded")
    def changed(self, payload: dict[str, Any]) -> dict[str, Any]:
        payload.update(self.config.get("set", {}))
        return payload
