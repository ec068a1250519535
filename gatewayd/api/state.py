# -*- test-case-name: tests.unit.test_api_state -*-
"""
What the admin API answers, read from a running L{GatewayService}.

One L{AdminState} serves both faces of the API (HTTP and gRPC): every method
returns fresh plain data (dicts, lists, str, int, bool) that shares nothing
with the gateway, so the gRPC threads can encode it after the read.  Every
method must run in the reactor thread: the pools, sessions and registry it
reads are not locked.

Shapes follow GatewayD's C{api/v1} answers; what we add is listed in
C{docs/api.md}.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from gatewayd import __version__
from gatewayd.api.errors import InvalidArgument, NotFound
from gatewayd.api.plain import nanoseconds, redacted, to_json
from gatewayd.hooks import names as hook_names
from gatewayd.interfaces import IPluginClient

#: GatewayD's numbers for a server's C{status}.
RUNNING, STOPPED = 0, 1
SERVING, NOT_SERVING = "SERVING", "NOT_SERVING"

#: Objects of C{gatewayd.yaml} that are maps of groups (C{GetGlobalConfig?groupName=}).
_GROUPED = ("loggers", "metrics", "clients", "pools", "proxies", "servers")

#: At most this many clients are listed by C{/v1/status} unless asked otherwise.
DEFAULT_CLIENT_LIMIT = 500
MAX_CLIENT_LIMIT = 10_000


def version_info() -> str:
    """GatewayD's C{versionInfo} line, with Python where GatewayD names Go."""
    return (f"gatewayd v{__version__} (Python {platform.python_version()}, "
            f"{sys.platform}/{platform.machine()})")


def format_address(address: Any) -> str:
    """C{host:port} (C{[v6]:port}) of a Twisted address, or the path of a Unix one."""
    host = getattr(address, "host", None)
    if host is None:
        name = getattr(address, "name", "") or ""
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"


def parse_bool(name: str, value: str) -> bool:
    """A query-string boolean; anything unclear is a 400, not a guess."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise InvalidArgument(f"parameter {name!r} must be true or false, not {value!r}")


def parse_limit(value: str) -> int:
    """C{/v1/status?limit=}: how many clients to list."""
    try:
        limit = int(value.strip())
    except ValueError:
        raise InvalidArgument(f"parameter 'limit' must be an integer, not {value!r}") from None
    if not 0 <= limit <= MAX_CLIENT_LIMIT:
        raise InvalidArgument(f"parameter 'limit' must be between 0 and {MAX_CLIENT_LIMIT}")
    return limit


class AdminState:
    """
    Read-only views of one gateway.

    @param gateway: a L{gatewayd.service.GatewayService} (C{config}, C{groups},
        C{hooks}, C{reactor}, optionally C{plugin_host}).
    """

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    # -- GatewayD's routes -------------------------------------------------------------------

    def version(self) -> dict[str, str]:
        return {"version": __version__, "versionInfo": version_info()}

    def global_config(self, group: str = "") -> dict[str, Any]:
        """
        The whole C{gatewayd.yaml} as loaded (defaults and environment applied),
        or with C{group} only that group's objects plus C{api}, like GatewayD.

        @raise NotFound: no server group of that name.
        """
        plain = to_json(self.gateway.config.global_)
        if group:
            if group not in plain.get("servers", {}):
                raise NotFound("group not found")
            filtered: dict[str, Any] = {}
            for key in _GROUPED:
                groups = plain.get(key, {})
                if group in groups:
                    filtered[key] = {group: groups[group]}
            filtered["api"] = plain["api"]
            plain = filtered
        return redacted(plain)

    def plugin_config(self) -> dict[str, Any]:
        """The whole C{gatewayd_plugins.yaml} as loaded, redacted."""
        return redacted(to_json(self.gateway.config.plugins))

    def plugins(self) -> dict[str, list[dict[str, Any]]]:
        """GatewayD's C{PluginConfigs}: the registered plugins' metadata, in priority order."""
        return {"configs": [self._plugin_config(p) for p in self._registered()]}

    def pools(self) -> dict[str, dict[str, dict[str, int]]]:
        """C{{group: {block: {cap, size}}}}: C{size} counts idle connections, as GatewayD."""
        return {name: {block.name: {"cap": block.pool.size, "size": block.pool.idle_count}
                       for block in group.blocks.values()}
                for name, group in self.gateway.groups.items()}

    def proxies(self) -> dict[str, dict[str, dict[str, Any]]]:
        """
        C{{group: {block: {available, busy, total}}}}: the local addresses of
        idle backend connections and the remote addresses of the clients
        served by each block.
        """
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for name, group in self.gateway.groups.items():
            busy: dict[str, list[str]] = {b: [] for b in group.blocks}
            for proto in _live(group.factory.connections):
                block = proto.block
                if block is not None and proto.session is not None and block.name in busy:
                    busy[block.name].append(proto.peer_info()["remote"])
            result[name] = {}
            for block_name, block in group.blocks.items():
                available = [format_address(conn.transport.getHost())
                             for conn in _idle_connections(block.pool)
                             if conn.transport is not None]
                clients = sorted(busy[block_name])
                result[name][block_name] = {"available": available, "busy": clients,
                                            "total": len(available) + len(clients)}
        return result

    def servers(self) -> dict[str, dict[str, Any]]:
        """C{{group: {network, address, status, tickInterval, loadBalancer, isTLSEnabled}}}."""
        result = {}
        for name, group in self.gateway.groups.items():
            config = group.config
            result[name] = {
                "network": config.network,
                "address": group.address or config.address,
                "status": RUNNING if _listening(group) else STOPPED,
                "tickInterval": nanoseconds(config.tick_interval),
                "loadBalancer": {"strategy": config.load_balancer.strategy},
                "isTLSEnabled": bool(config.enable_tls),
            }
        return result

    def health(self, strict: bool = False) -> tuple[bool, dict[str, Any]]:
        """
        C{/healthz}: serving when every server group listens (GatewayD also
        asks Raft, which we do not run).  With C{strict}, every block's
        backend must also be reachable: a readiness probe.

        @return: (serving, body); body is C{{"status": ...}} plus per-group detail.
        """
        servers = {name: SERVING if _listening(g) else NOT_SERVING
                   for name, g in self.gateway.groups.items()}
        backends = {name: {b.name: _pool_state(b.pool) for b in g.blocks.values()}
                    for name, g in self.gateway.groups.items()}
        serving = bool(servers) and all(s == SERVING for s in servers.values())
        if strict:
            serving = serving and all(state == "healthy" for blocks in backends.values()
                                      for state in blocks.values())
        return serving, {"status": SERVING if serving else NOT_SERVING,
                         "servers": servers, "backends": backends}

    # -- ours ----------------------------------------------------------------------------------

    def status(self, limit: int = DEFAULT_CLIENT_LIMIT) -> dict[str, Any]:
        """
        Everything the status page shows, in one read: servers with their
        blocks and pools, byte counters (the page turns them into rates),
        connected clients (at most C{limit}) and plugins with their health.
        """
        gateway = self.gateway
        clients: list[dict[str, Any]] = []
        total_clients = 0
        servers = []
        totals = dict.fromkeys(("bytesFromClient", "bytesToServer", "bytesFromServer",
                                "bytesToClient"), 0)
        for name, group in gateway.groups.items():
            connected = _live(group.factory.connections)
            total_clients += len(connected)
            per_block: dict[str, int] = {}
            for proto in connected:
                block = proto.block.name if proto.block is not None else ""
                if proto.session is not None:
                    per_block[block] = per_block.get(block, 0) + 1
                if len(clients) < limit:
                    peer = proto.peer_info()
                    clients.append({"group": name, "block": block, "remote": peer["remote"],
                                    "local": peer["local"], "tls": bool(proto.tls),
                                    "state": _client_state(proto)})
            blocks = []
            for block in group.blocks.values():
                stats, pool = block.stats, block.pool
                counters = {"bytesFromClient": stats.bytes_received_from_client,
                            "bytesToServer": stats.bytes_sent_to_server,
                            "bytesFromServer": stats.bytes_received_from_server,
                            "bytesToClient": stats.bytes_sent_to_client}
                for key, value in counters.items():
                    totals[key] += value
                blocks.append({
                    "name": block.name,
                    "backend": block.target.address,
                    "clients": per_block.get(block.name, 0),
                    "pool": {"size": pool.size, "available": pool.idle_count,
                             "busy": pool.busy_count, "waiting": pool.waiting_count,
                             "state": _pool_state(pool),
                             "lastError": getattr(pool, "last_error", "") or ""},
                    "bytes": counters,
                    "poolExhausted": stats.pool_exhausted,
                    "dialFailures": stats.backend_dial_failures,
                })
            servers.append({
                "group": name,
                "network": group.config.network,
                "address": group.address or group.config.address,
                "listening": _listening(group),
                "tls": bool(group.config.enable_tls),
                "strategy": group.config.load_balancer.strategy,
                "clients": len(connected),
                "rejected": gateway.stats.clients_rejected.get(name, 0),
                "blocks": blocks,
            })
        serving, _ = self.health()
        return {
            "version": __version__,
            "time": float(gateway.reactor.seconds()),
            "status": SERVING if serving else NOT_SERVING,
            "servers": servers,
            "clients": {"total": total_clients, "shown": clients,
                        "truncated": total_clients > len(clients)},
            "plugins": self._plugin_health(),
            "totals": {"clients": total_clients, **totals},
        }

    # -- helpers -------------------------------------------------------------------------------

    def _registered(self) -> list[Any]:
        return list(self.gateway.hooks.plugins())

    def _entries(self) -> dict[str, Any]:
        plugins = getattr(self.gateway.config, "plugins", None)
        return {e.name: e for e in getattr(plugins, "plugins", [])}

    def _plugin_config(self, plugin: Any) -> dict[str, Any]:
        """One plugin's metadata in GatewayD's C{PluginConfig} shape, secrets redacted."""
        meta = plugin.metadata if isinstance(plugin.metadata, dict) else {}
        ident = meta.get("id") if isinstance(meta.get("id"), dict) else {}
        entry = self._entries().get(plugin.name)
        requires = meta.get("requires") or {}
        if isinstance(requires, list):  # the SDK's list of {name, version}; the proto's map
            requires = {str(r.get("name", "")): str(r.get("version", ""))
                        for r in requires if isinstance(r, dict)}
        hooks = meta.get("hooks")
        if not isinstance(hooks, list):
            hooks = sorted(hook_names.NUMBER_BY_NAME[h] for h in plugin.hooks
                           if h in hook_names.NUMBER_BY_NAME)
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        return {
            # As GatewayD: name and checksum from the config entry, the rest from the plugin.
            "id": {"name": plugin.name,
                   "version": str(ident.get("version", "")),
                   "remoteUrl": str(ident.get("remoteUrl", "")),
                   "checksum": entry.checksum if entry else str(ident.get("checksum", ""))},
            "description": str(meta.get("description", "")),
            "authors": [str(a) for a in meta.get("authors") or []],
            "license": str(meta.get("license", "")),
            "projectUrl": str(meta.get("projectUrl", "")),
            # Only the settings are redacted: plugin names in requires are not secrets.
            "config": redacted({str(k): _text(v) for k, v in config.items()}),
            "hooks": [int(h) for h in hooks],
            "requires": {str(k): str(v) for k, v in requires.items()},
            "tags": [str(t) for t in meta.get("tags") or []],
            "categories": [str(c) for c in meta.get("categories") or []],
        }

    def _plugin_health(self) -> list[dict[str, Any]]:
        """Registered plugins with their health, then enabled entries that are not loaded."""
        out = []
        registered = self._registered()
        for plugin in registered:
            meta = plugin.metadata if isinstance(plugin.metadata, dict) else {}
            ident = meta.get("id") if isinstance(meta.get("id"), dict) else {}
            remote = IPluginClient.providedBy(plugin)
            running = bool(getattr(plugin, "running", True)) if remote else True
            out.append({
                "name": plugin.name,
                "version": str(ident.get("version", "")),
                "priority": int(plugin.priority),
                "kind": "process" if remote else "in-process",
                "pid": getattr(plugin, "pid", None) if remote else None,
                "hooks": sorted(plugin.hooks),
                "health": "serving" if running else "stopped",
            })
        loaded = {p.name for p in registered}
        for name, entry in self._entries().items():
            if entry.enabled and name not in loaded:
                out.append({"name": name, "version": "", "priority": None,
                            "kind": "in-process" if entry.module else "process", "pid": None,
                            "hooks": [], "health": "not loaded"})
        return out


def _text(value: Any) -> str:
    """C{map<string,string>} values as GatewayD's plugins spell them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _listening(group: Any) -> bool:
    port = group.port
    return port is not None and bool(getattr(port, "connected", True))


def _live(connections: Any) -> list[Any]:
    """
    Clients whose socket is still open: one whose connection was lost but
    that is still listed (on its way out) has no addresses left to show.
    """
    return [p for p in list(connections)
            if p.transport is not None and getattr(p.transport, "connected", True)]


def _idle_connections(pool: Any) -> list[Any]:
    """The pool's idle backend connections (L{BackendPool} keeps them in C{_idle})."""
    return list(getattr(pool, "_idle", ()))


def _pool_state(pool: Any) -> str:
    if pool.healthy:
        return "healthy"
    return "starting" if getattr(pool, "starting", False) else "unhealthy"


def _client_state(proto: Any) -> str:
    if proto.session is not None:
        return "active"
    return "waiting" if proto.block is not None else "startup"
