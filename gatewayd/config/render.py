# -*- test-case-name: tests.unit.test_config_render -*-
"""
Commented YAML for C{gatewayd config init} and the files shipped in C{etc/}.

The text is generated from the schema dataclasses, so every key appears with
its current default; the comments say what each key does and where we differ
from GatewayD.  Listeners default to 127.0.0.1 here (GatewayD's shipped file
listens on 0.0.0.0): exposing a database gateway is a decision to make on purpose.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import yaml

from gatewayd.config import schema as s
from gatewayd.config.durations import compact_duration
from gatewayd.config.shape import (
    BLOCKS, DUR, GROUPS, MAPPING, OBJECT, RECORDS, SCALARS, STRINGS, Slot, slots,
)

EXAMPLES = ("default", "multi-pool")
_WIDTH = 100

_HEADER = """\
gatewayd global configuration (GatewayD-compatible keys and defaults).
Reference: docs/configuration.md.  Check a file with: gatewayd config lint -c <file>
Durations are Go durations (30s, 1m, 500ms) or integer nanoseconds.
Any key can be overridden by an environment variable, e.g.
GATEWAYD_CLIENTS_DEFAULT_WRITES_ADDRESS=127.0.0.1:5432 or GATEWAYD_LOGGERS_DEFAULT_LEVEL=debug.
A server group G uses loggers.G (else loggers.default), clients.G, pools.G and proxies.G:
each block (writes, reads, ...) is one PostgreSQL server with its own pool."""

_SECTIONS = {
    "loggers": "Where and how each group logs.",
    "metrics": "Prometheus endpoint (only metrics.default is served, as in GatewayD).",
    "clients": "clients.<group>.<block>: how the gateway connects to each PostgreSQL server.",
    "pools": "pools.<group>.<block>: pre-dialled connections to that block's server.",
    "proxies": "proxies.<group>.<block>: hands pooled connections to clients.",
    "servers": "servers.<group>: one listener per group; new clients are balanced over its blocks.",
    "api": "Admin API (HTTP and gRPC).",
}

_COMMENTS: dict[tuple[type, str], str] = {
    (s.Logger, "output"): "console, stdout, stderr, file, syslog, rsyslog (several allowed)",
    (s.Logger, "level"): "trace, debug, info, warn, error, fatal, panic, disabled",
    (s.Logger, "noColor"): "console output without colours",
    (s.Logger, "timeFormat"): "JSON time field: unix, unixms, unixmicro, unixnano",
    (s.Logger, "consoleTimeFormat"): "Go layout name: RFC3339, RFC3339Nano, Kitchen, Stamp...",
    (s.Logger, "fileName"): "file of the 'file' output",
    (s.Logger, "maxSize"): "MB before the file is rotated",
    (s.Logger, "maxBackups"): "rotated files kept (maxBackups 0 and maxAge 0: all)",
    (s.Logger, "maxAge"): "days rotated files are kept",
    (s.Logger, "compress"): "gzip rotated files",
    (s.Logger, "localTime"): "local time rather than UTC in rotated file names",
    (s.Logger, "rsyslogNetwork"): "tcp, udp or unix",
    (s.Logger, "rsyslogAddress"): "syslog server of the 'rsyslog' output",
    (s.Logger, "syslogPriority"): "emerg, alert, crit, err, warning, notice, info, debug",
    (s.Metrics, "enabled"): "serve Prometheus metrics",
    (s.Metrics, "address"): "listen address (GatewayD's shipped file: 0.0.0.0:9090)",
    (s.Metrics, "path"): "URL path",
    (s.Metrics, "readHeaderTimeout"): "time to read request headers; also the per-request limit",
    (s.Metrics, "timeout"): "HTTP read, write and idle timeout",
    (s.Metrics, "certFile"): "with keyFile: serve HTTPS",
    (s.Metrics, "keyFile"): "PEM private key",
    (s.Client, "network"): "tcp, tcp4, tcp6 or unix",
    (s.Client, "address"): "host:port, or a socket path for unix "
                           "(/var/run/postgresql/.s.PGSQL.5432)",
    (s.Client, "tcpKeepAlive"): "TCP keepalive on connections to PostgreSQL",
    (s.Client, "tcpKeepAlivePeriod"): "keepalive interval",
    (s.Client, "receiveChunkSize"): "read buffer size, bytes",
    (s.Client, "receiveDeadline"): "0s: none",
    (s.Client, "receiveTimeout"): "0s: none",
    (s.Client, "sendDeadline"): "0s: none",
    (s.Client, "dialTimeout"): "time allowed to connect to PostgreSQL",
    (s.Client, "retries"): "connection retries after the first attempt",
    (s.Client, "backoff"): "wait before the first retry",
    (s.Client, "backoffMultiplier"): "the wait grows by this factor per retry (>= 1)",
    (s.Client, "disableBackoffCaps"): "lift the caps: multiplier <= 10, one wait <= 1m",
    (s.Client, "startupParams"): "credentials for pre-authenticated pooled connections",
    (s.Client, "sslmode"): "TLS to PostgreSQL, as libpq: disable, allow, prefer, require, "
                           "verify-ca, verify-full",
    (s.Client, "sslrootcert"): "CA bundle; required by verify-ca and verify-full",
    (s.Client, "sslcert"): "client certificate presented to PostgreSQL (with sslkey)",
    (s.Client, "sslkey"): "its private key",
    (s.Client, "sslservername"): "name verify-full checks (default: the host of address)",
    (s.Pool, "size"): "connections dialled at start, >= 1 (GatewayD silently turns 1 into 2)",
    (s.Pool, "waitTimeout"): "a client waits this long for a free connection, then gets 53300",
    (s.Proxy, "healthCheckPeriod"): "how often idle connections are checked",
    (s.Server, "network"): "tcp or unix",
    (s.Server, "address"): "where clients connect (GatewayD's default: 0.0.0.0:15432)",
    (s.Server, "enableTicker"): "fire the onTick hook every tickInterval",
    (s.Server, "tickInterval"): "onTick interval",
    (s.Server, "enableTLS"): "answer SSLRequest and terminate TLS with certFile and keyFile",
    (s.Server, "certFile"): "PEM certificate (chain); required by enableTLS",
    (s.Server, "keyFile"): "PEM private key; required by enableTLS",
    (s.Server, "handshakeTimeout"): "TLS handshake time limit",
    (s.Server, "proxies"): "blocks of proxies.<group> this server uses, in order "
                           "(default: all of them)",
    (s.Server, "tlsMinVersion"): "1.2 or 1.3",
    (s.Server, "requireTLS"): "refuse clients that do not use TLS (SQLSTATE 28000)",
    (s.Server, "maxStartupPacketSize"): "bytes; a larger startup packet is refused",
    (s.Server, "maxMessageSize"): "bytes; a larger message closes that client (08P01)",
    (s.LoadBalancer, "strategy"): "ROUND_ROBIN, RANDOM, WEIGHTED_ROUND_ROBIN (needs rules), "
                                  "CONSISTENT_HASH, LEAST_CONNECTIONS",
    (s.LoadBalancer, "consistentHash"): "when present, a client IP keeps getting the same block",
    (s.LoadBalancer, "loadBalancingRules"): "[{condition, distribution: [{proxyName, weight}]}]; "
                                            "first matching rule wins",
    (s.API, "enabled"): "admin API",
    (s.API, "httpAddress"): "GatewayD's shipped file: 0.0.0.0:18080",
    (s.API, "grpcNetwork"): "tcp or unix",
    (s.API, "grpcAddress"): "GatewayD's shipped file: 0.0.0.0:19090",
    (s.API, "token"): "when set, the API requires 'Authorization: Bearer <token>'",
    (s.API, "tokenFile"): "or read the token from this file",
    (s.PluginsConfig, "enableMetricsMerger"): "merge plugins' metrics into /metrics",
    (s.PluginsConfig, "metricsMergerPeriod"): "how often plugin metrics are collected",
    (s.PluginsConfig, "healthCheckPeriod"): "how often plugins are pinged",
    (s.PluginsConfig, "reloadOnCrash"): "restart a plugin that stops answering",
    (s.PluginsConfig, "timeout"): "time limit of one hook chain (all plugins of one hook)",
    (s.PluginsConfig, "startTimeout"): "time a plugin process has to start and hand shake",
    (s.PluginsConfig, "defaultPolicy"): "passthrough or terminate, when a hook result has "
                                        "no signals",
    (s.PluginsConfig, "policyTimeout"): "time limit of one policy evaluation",
    (s.PluginsConfig, "actionTimeout"): "default time limit of an action (0s: none)",
    (s.PluginsConfig, "actionRedis"): "publish asynchronous actions to Redis pub/sub",
    (s.PluginsConfig, "policies"): "[{name, policy, metadata}]: Act policies (expressions)",
    (s.ActionRedis, "enabled"): "turn publishing on",
    (s.ActionRedis, "address"): "Redis host:port",
    (s.ActionRedis, "channel"): "pub/sub channel",
}

_OPTIONAL_EXAMPLES: dict[tuple[type, str], str] = {
    (s.Server, "proxies"): "[writes]",
    (s.LoadBalancer, "consistentHash"): "{useSourceIp: true}",
    (s.Client, "startupParams"): "{user: app, database: app, password: change-me}",
}

_PLUGINS_EXAMPLE = """\
plugins:  # in chain order: the first runs first
  # An out-of-process plugin (GatewayD's Go plugins work unchanged):
  # - name: gatewayd-plugin-cache
  #   enabled: true
  #   url: github.com/gatewayd-io/gatewayd-plugin-cache@latest
  #   localPath: ../gatewayd-plugin-cache/gatewayd-plugin-cache
  #   checksum: <sha256sum of localPath>   # required for localPath
  #   args: ["--log-level", "info"]
  #   env:
  #     - MAGIC_COOKIE_KEY=GATEWAYD_PLUGIN
  #     - MAGIC_COOKIE_VALUE=5712b87aa5d7e9f9e9ab643e6603181c5b796015cb1c09d6f5ada882bf2a1872
  #   failureMode: open   # open: a failing hook lets traffic pass; closed: it is refused
  # An in-process Python plugin:
  # - name: my-plugin
  #   module: mypackage.plugin:MyPlugin
  #   config: {someSetting: value}
"""


def render_global(example: str = "default") -> str:
    """
    A complete, commented C{gatewayd.yaml}.

    @param example: C{"default"}: one block C{writes} on 127.0.0.1:5432;
        C{"multi-pool"}: blocks C{writes} (127.0.0.1:5432) and C{reads}
        (127.0.0.1:5433) behind C{WEIGHTED_ROUND_ROBIN} rules.
    """
    if example not in EXAMPLES:
        raise ValueError(f"unknown example {example!r} (choose {', '.join(EXAMPLES)})")
    cfg = _global_example(example)
    out = _Out()
    out.comment(0, _HEADER)
    for slot in slots(s.GlobalConfig):
        if slot.key == "raft":
            continue
        out.blank()
        if slot.key in _SECTIONS:
            out.comment(0, _SECTIONS[slot.key])
        _emit_slot(out, s.GlobalConfig, slot, getattr(cfg, slot.name), 0)
    out.blank()
    out.comment(0, "raft: accepted for compatibility with GatewayD files and ignored: gatewayd "
                   "keeps no cluster state (round-robin counters are local, consistent hashing "
                   "is a function of the config).")
    return out.text()


def render_plugins() -> str:
    """A complete, commented C{gatewayd_plugins.yaml} with no plugin enabled."""
    cfg = s.PluginsConfig()
    out = _Out()
    out.comment(0, "gatewayd plugins configuration (GatewayD-compatible).\n"
                   "Reference: docs/configuration.md.  Environment overrides: GATEWAYD_<KEY>, "
                   "e.g. GATEWAYD_DEFAULTPOLICY=terminate, GATEWAYD_ACTIONREDIS_ENABLED=true.")
    out.blank()
    for slot in slots(s.PluginsConfig):
        if slot.key == "plugins":
            continue
        _emit_slot(out, s.PluginsConfig, slot, getattr(cfg, slot.name), 0)
    out.blank()
    out.lines.extend(_PLUGINS_EXAMPLE.rstrip("\n").splitlines())
    return out.text()


def _global_example(example: str) -> s.GlobalConfig:
    cfg = s.GlobalConfig()
    cfg.metrics["default"].address = "127.0.0.1:9090"
    cfg.clients["default"]["writes"].address = "127.0.0.1:5432"
    cfg.servers["default"].address = "127.0.0.1:15432"
    cfg.api.http_address = "127.0.0.1:18080"
    cfg.api.grpc_address = "127.0.0.1:19090"
    if example == "multi-pool":
        cfg.clients["default"]["reads"] = s.Client(address="127.0.0.1:5433")
        cfg.pools["default"]["reads"] = s.Pool()
        cfg.proxies["default"]["reads"] = s.Proxy()
        lb = cfg.servers["default"].load_balancer
        lb.strategy = "WEIGHTED_ROUND_ROBIN"
        lb.load_balancing_rules = [
            s.LoadBalancingRule('application_name == "reporting"',
                                [s.Distribution("reads", 1)]),
            s.LoadBalancingRule("DEFAULT",
                                [s.Distribution("writes", 70), s.Distribution("reads", 30)]),
        ]
    return cfg


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def blank(self) -> None:
        self.lines.append("")

    def comment(self, indent: int, text: str) -> None:
        pad = "  " * indent + "# "
        for paragraph in text.splitlines():
            self.lines.extend(textwrap.wrap(paragraph, _WIDTH, initial_indent=pad,
                                            subsequent_indent=pad) or [pad.rstrip()])

    def line(self, text: str, note: str = "") -> None:
        if note and len(text) + len(note) + 4 <= _WIDTH:
            self.lines.append(f"{text}  # {note}")
            return
        if note:
            self.comment((len(text) - len(text.lstrip())) // 2, note)
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _emit_object(out: _Out, obj: Any, indent: int, notes: bool = True) -> None:
    for slot in slots(type(obj)):
        _emit_slot(out, type(obj), slot, getattr(obj, slot.name), indent, notes)


def _emit_slot(out: _Out, owner: type, slot: Slot, value: Any, indent: int,
               notes: bool = True) -> None:
    pad = "  " * indent
    note = (_COMMENTS.get((owner, slot.key), slot.doc) if notes else "")
    kind = slot.kind
    if value is None:
        example = _OPTIONAL_EXAMPLES.get((owner, slot.key))
        if example and notes:
            out.line(f"{pad}# {slot.key}: {example}", note)
        return
    if kind in SCALARS or kind == STRINGS or (kind in (RECORDS, MAPPING) and not value):
        out.line(f"{pad}{slot.key}: {_format(slot, value)}", note)
    elif kind == MAPPING:
        out.line(f"{pad}{slot.key}: {_flow(value)}", note)
    elif kind == OBJECT:
        out.line(f"{pad}{slot.key}:", note)
        _emit_object(out, value, indent + 1, notes)
    elif kind == RECORDS:
        out.line(f"{pad}{slot.key}:", note)
        for record in value:
            sub = _Out()
            _emit_object(sub, record, indent + 1, notes=False)
            first = sub.lines[0]
            sub.lines[0] = f"{pad}- {first[len(pad) + 2:]}"
            out.lines.extend(sub.lines)
    elif kind in (GROUPS, BLOCKS):
        out.line(f"{pad}{slot.key}:", note)
        for group, member in value.items():
            out.line(f"{pad}  {group}:")
            if kind == GROUPS:
                _emit_object(out, member, indent + 2, notes)
                continue
            for block, record in member.items():
                out.line(f"{pad}    {block}:")
                _emit_object(out, record, indent + 3, notes and group == next(iter(value))
                             and block == next(iter(member)))


def _format(slot: Slot, value: Any) -> str:
    if slot.kind == DUR:
        return compact_duration(value)
    if slot.kind == STRINGS or isinstance(value, list):
        return _flow(value)
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        return str(value)
    if value and value == value.strip() and "#" not in value and _loads_as(value, value):
        return value
    if value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value)


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return text.removesuffix("\n...").strip()


def _loads_as(text: str, expected: Any) -> bool:
    try:
        return yaml.safe_load(f"k: {text}") == {"k": expected}
    except yaml.YAMLError:
        return False
