"""
The configuration schema: every object, key and default of GatewayD's two files,
plus our own additions (marked "ours" below).

Each dataclass field carries its YAML key (GatewayD's camelCase spelling) in its
metadata, so that loading, env overrides, JSON Schema generation, lint and
`config init` are all driven by this one table.  Durations are stored as float
seconds; the loader accepts Go duration strings ("30s", "1m", "500ms") and
integer nanoseconds as GatewayD does.

This module imports nothing of ours and nothing of Twisted's.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable

#: Marks a field as a duration (float seconds in Python, Go string in YAML).
DURATION = "duration"


def key(name: str, default: Any = MISSING, *, factory: Callable[[], Any] | None = None,
        kind: str | None = None, doc: str = "", enum: tuple[str, ...] | None = None,
        ours: bool = False) -> Any:
    """
    Declare a field with its YAML key.

    @param name: the key as written in YAML (camelCase, GatewayD spelling).
    @param kind: L{DURATION} for durations.
    @param enum: allowed values, checked by validation and emitted in the schema.
    @param ours: True when the key is a gatewayd (Python) extension over GatewayD.
    """
    meta = {"key": name, "kind": kind, "doc": doc, "enum": enum, "ours": ours}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def yaml_key(f: Any) -> str:
    """The YAML key of a dataclass field."""
    return f.metadata.get("key", f.name)


LOG_OUTPUTS = ("console", "stdout", "stderr", "file", "syslog", "rsyslog")
LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "fatal", "panic", "disabled")
TIME_FORMATS = ("unix", "unixms", "unixmicro", "unixnano")
CONSOLE_TIME_FORMATS = (
    "Layout", "ANSIC", "UnixDate", "RubyDate", "RFC822", "RFC822Z", "RFC850", "RFC1123",
    "RFC1123Z", "RFC3339", "RFC3339Nano", "Kitchen", "Stamp", "StampMilli", "StampMicro",
    "StampNano",
)
SYSLOG_PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
RSYSLOG_NETWORKS = ("tcp", "udp", "unix")
CLIENT_NETWORKS = ("tcp", "tcp4", "tcp6", "unix")
SERVER_NETWORKS = ("tcp", "unix")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TLS_VERSIONS = ("1.2", "1.3")
LB_STRATEGIES = (
    "ROUND_ROBIN", "RANDOM", "WEIGHTED_ROUND_ROBIN", "CONSISTENT_HASH", "LEAST_CONNECTIONS",
)
DEFAULT_POLICIES = ("passthrough", "terminate")
PLUGIN_FAILURE_MODES = ("open", "closed")


@dataclass
class Logger:
    """C{loggers.<group>}: where and how one group logs."""

    output: list[str] = key("output", factory=lambda: ["console"], enum=LOG_OUTPUTS)
    level: str = key("level", "info", enum=LOG_LEVELS)
    no_color: bool = key("noColor", False)
    time_format: str = key("timeFormat", "unix", enum=TIME_FORMATS)
    console_time_format: str = key("consoleTimeFormat", "RFC3339", enum=CONSOLE_TIME_FORMATS)
    file_name: str = key("fileName", "gatewayd.log")
    max_size: int = key("maxSize", 500, doc="MB before rotation")
    max_backups: int = key("maxBackups", 5)
    max_age: int = key("maxAge", 30, doc="days")
    compress: bool = key("compress", True)
    local_time: bool = key("localTime", False)
    rsyslog_network: str = key("rsyslogNetwork", "tcp", enum=RSYSLOG_NETWORKS)
    rsyslog_address: str = key("rsyslogAddress", "localhost:514")
    syslog_priority: str = key("syslogPriority", "info", enum=SYSLOG_PRIORITIES)


@dataclass
class Metrics:
    """C{metrics.<group>}: the Prometheus endpoint."""

    enabled: bool = key("enabled", True)
    address: str = key("address", "localhost:9090")
    path: str = key("path", "/metrics")
    read_header_timeout: float = key("readHeaderTimeout", 10.0, kind=DURATION)
    timeout: float = key("timeout", 10.0, kind=DURATION)
    cert_file: str = key("certFile", "")
    key_file: str = key("keyFile", "")


@dataclass
class StartupParams:
    """C{clients.<g>.<b>.startupParams}: accepted for compatibility with newer GatewayD."""

    user: str = key("user", "")
    database: str = key("database", "")
    password: str = key("password", "")


@dataclass
class Client:
    """C{clients.<group>.<block>}: how the gateway dials one PostgreSQL server."""

    network: str = key("network", "tcp", enum=CLIENT_NETWORKS)
    address: str = key("address", "localhost:5432")
    tcp_keep_alive: bool = key("tcpKeepAlive", False)
    tcp_keep_alive_period: float = key("tcpKeepAlivePeriod", 30.0, kind=DURATION)
    receive_chunk_size: int = key("receiveChunkSize", 8192)
    receive_deadline: float = key("receiveDeadline", 0.0, kind=DURATION)
    receive_timeout: float = key("receiveTimeout", 0.0, kind=DURATION)
    send_deadline: float = key("sendDeadline", 0.0, kind=DURATION)
    dial_timeout: float = key("dialTimeout", 60.0, kind=DURATION)
    retries: int = key("retries", 3)
    backoff: float = key("backoff", 1.0, kind=DURATION)
    backoff_multiplier: float = key("backoffMultiplier", 2.0)
    disable_backoff_caps: bool = key("disableBackoffCaps", False)
    startup_params: StartupParams | None = key("startupParams", None)
    # ours: TLS towards PostgreSQL (GatewayD has none), libpq names and meanings.
    sslmode: str = key("sslmode", "disable", enum=SSL_MODES, ours=True)
    sslrootcert: str = key("sslrootcert", "", ours=True, doc="CA bundle for verify-ca/verify-full")
    sslcert: str = key("sslcert", "", ours=True, doc="client certificate presented to PostgreSQL")
    sslkey: str = key("sslkey", "", ours=True)
    sslservername: str = key(
        "sslservername", "", ours=True,
        doc="host name checked by verify-full; defaults to the host of `address`")


@dataclass
class Pool:
    """C{pools.<group>.<block>}."""

    size: int = key("size", 10)
    # ours: GatewayD closes the socket when the pool is exhausted; we queue, then 53300.
    wait_timeout: float = key("waitTimeout", 30.0, kind=DURATION, ours=True)
    max_waiting: int = key("maxWaiting", 1000, ours=True,
                           doc="clients queued at most; more are refused at once with 53300")


@dataclass
class Proxy:
    """C{proxies.<group>.<block>}."""

    health_check_period: float = key("healthCheckPeriod", 60.0, kind=DURATION)


@dataclass
class ConsistentHash:
    """C{servers.<g>.loadBalancer.consistentHash}: its presence turns hashing on."""

    use_source_ip: bool = key("useSourceIp", True)


@dataclass
class Distribution:
    """One C{{proxyName, weight}} entry of a load-balancing rule."""

    proxy_name: str = key("proxyName", "")
    weight: int = key("weight", 1)


@dataclass
class LoadBalancingRule:
    """C{{condition, distribution}}: see the README's rule language."""

    condition: str = key("condition", "DEFAULT")
    distribution: list[Distribution] = key("distribution", factory=list)


@dataclass
class LoadBalancer:
    """C{servers.<g>.loadBalancer}."""

    strategy: str = key("strategy", "ROUND_ROBIN", enum=LB_STRATEGIES)
    consistent_hash: ConsistentHash | None = key("consistentHash", None)
    load_balancing_rules: list[LoadBalancingRule] = key("loadBalancingRules", factory=list)


@dataclass
class Server:
    """C{servers.<group>}: one listener (tenant)."""

    network: str = key("network", "tcp", enum=SERVER_NETWORKS)
    address: str = key("address", "0.0.0.0:15432")
    enable_ticker: bool = key("enableTicker", False)
    tick_interval: float = key("tickInterval", 5.0, kind=DURATION)
    enable_tls: bool = key("enableTLS", False)
    cert_file: str = key("certFile", "")
    key_file: str = key("keyFile", "")
    handshake_timeout: float = key("handshakeTimeout", 5.0, kind=DURATION)
    load_balancer: LoadBalancer = key("loadBalancer", factory=LoadBalancer)
    # ours
    proxies: list[str] | None = key(
        "proxies", None, ours=True,
        doc="blocks of proxies.<group> this server uses, in order (default: all, config order)")
    tls_min_version: str = key("tlsMinVersion", "1.2", enum=TLS_VERSIONS, ours=True)
    require_tls: bool = key("requireTLS", False, ours=True,
                            doc="refuse plaintext clients with SQLSTATE 28000")
    max_startup_packet_size: int = key("maxStartupPacketSize", 10000, ours=True)
    max_message_size: int = key("maxMessageSize", 1 << 30, ours=True)
    drain_timeout: float = key("drainTimeout", 30.0, kind=DURATION, ours=True,
                               doc="on SIGTERM, how long sessions may finish before closing")


@dataclass
class API:
    """C{api}: the admin API."""

    enabled: bool = key("enabled", True)
    http_address: str = key("httpAddress", "localhost:18080")
    grpc_network: str = key("grpcNetwork", "tcp", enum=("tcp", "unix"))
    grpc_address: str = key("grpcAddress", "localhost:19090")
    # ours
    token: str = key("token", "", ours=True, doc="bearer token required by the API when set")
    token_file: str = key("tokenFile", "", ours=True)


@dataclass
class RaftPeer:
    """One C{raft.peers[]} entry."""

    id: str = key("id", "")
    address: str = key("address", "")
    grpc_address: str = key("grpcAddress", "")


@dataclass
class Raft:
    """
    C{raft}: accepted so GatewayD files load, but unused: our balancer state needs
    no consensus (consistent hashing is a pure function of the config).
    """

    address: str = key("address", "127.0.0.1:2223")
    node_id: str = key("nodeId", "node1")
    is_bootstrap: bool = key("isBootstrap", True)
    is_secure: bool = key("isSecure", False)
    cert_file: str = key("certFile", "")
    key_file: str = key("keyFile", "")
    directory: str = key("directory", "raft")
    grpc_address: str = key("grpcAddress", "127.0.0.1:50051")
    peers: list[RaftPeer] = key("peers", factory=list)


@dataclass
class GlobalConfig:
    """The whole of C{gatewayd.yaml}."""

    loggers: dict[str, Logger] = key("loggers", factory=lambda: {"default": Logger()})
    metrics: dict[str, Metrics] = key("metrics", factory=lambda: {"default": Metrics()})
    clients: dict[str, dict[str, Client]] = key(
        "clients", factory=lambda: {"default": {"writes": Client()}})
    pools: dict[str, dict[str, Pool]] = key(
        "pools", factory=lambda: {"default": {"writes": Pool()}})
    proxies: dict[str, dict[str, Proxy]] = key(
        "proxies", factory=lambda: {"default": {"writes": Proxy()}})
    servers: dict[str, Server] = key("servers", factory=lambda: {"default": Server()})
    api: API = key("api", factory=API)
    raft: Raft = key("raft", factory=Raft)


@dataclass
class ActionRedis:
    """C{actionRedis}: publish async Act actions to Redis pub/sub."""

    enabled: bool = key("enabled", False)
    address: str = key("address", "localhost:6379")
    channel: str = key("channel", "gatewayd-actions")


@dataclass
class Policy:
    """One C{policies[]} entry: a named boolean expression."""

    name: str = key("name", "")
    policy: str = key("policy", "")
    metadata: dict[str, Any] = key("metadata", factory=dict)


@dataclass
class PluginEntry:
    """One C{plugins[]} entry."""

    name: str = key("name", "")
    enabled: bool = key("enabled", True)
    url: str = key("url", "")
    local_path: str = key("localPath", "")
    args: list[str] = key("args", factory=list)
    env: list[str] = key("env", factory=list)
    checksum: str = key("checksum", "")
    # ours
    module: str = key("module", "", ours=True,
                      doc="import path 'pkg.mod:Class' of an in-process Python plugin")
    config: dict[str, Any] = key("config", factory=dict, ours=True,
                                 doc="settings handed to an in-process plugin")
    failure_mode: str = key("failureMode", "open", enum=PLUGIN_FAILURE_MODES, ours=True,
                            doc="open: a failing hook passes traffic; closed: it terminates")


@dataclass
class PluginsConfig:
    """The whole of C{gatewayd_plugins.yaml}."""

    enable_metrics_merger: bool = key("enableMetricsMerger", True)
    metrics_merger_period: float = key("metricsMergerPeriod", 5.0, kind=DURATION)
    health_check_period: float = key("healthCheckPeriod", 5.0, kind=DURATION)
    reload_on_crash: bool = key("reloadOnCrash", True)
    timeout: float = key("timeout", 30.0, kind=DURATION)
    start_timeout: float = key("startTimeout", 60.0, kind=DURATION)
    default_policy: str = key("defaultPolicy", "passthrough", enum=DEFAULT_POLICIES)
    policy_timeout: float = key("policyTimeout", 30.0, kind=DURATION)
    action_timeout: float = key("actionTimeout", 30.0, kind=DURATION)
    action_redis: ActionRedis = key("actionRedis", factory=ActionRedis)
    policies: list[Policy] = key("policies", factory=list)
    plugins: list[PluginEntry] = key("plugins", factory=list)


def field_by_key(cls: type, name: str) -> Any:
    """The dataclass field of C{cls} whose YAML key is C{name} (case-insensitive), or None."""
    lowered = name.lower()
    for f in fields(cls):
        if yaml_key(f).lower() == lowered:
            return f
    return None
