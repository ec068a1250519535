"""
gatewayd's plugin SDK: write a plugin once, run it in the gateway's process
or as a GatewayD-compatible plugin process.

    from gatewayd.sdk import Plugin, hook, signals
    from gatewayd.sdk.postgres import get_query, error_response_bytes

    class Firewall(Plugin):
        name = "sql-firewall"
        version = "0.1.0"

        @hook("onTrafficFromClient")
        def check(self, payload):
            if "drop" in (get_query(payload.get("request")) or "").lower():
                payload["response"] = error_response_bytes(
                    "DROP is not allowed", "42501", request=payload["request"])
                payload["__signals__"] = [signals.terminate()]
            return payload

    if __name__ == "__main__":
        Firewall.serve()

See docs/plugins.md.
"""

from gatewayd.sdk import signals
from gatewayd.sdk.log import PluginLog
from gatewayd.sdk.plugin import Plugin, hook, hook_name

__all__ = ["Plugin", "PluginLog", "hook", "hook_name", "signals"]
