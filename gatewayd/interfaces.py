"""
Every zope.interface of gatewayd, in one place.

Implementers are checked with C{verifyObject} in the tests.  Methods are written
without C{self}, as zope.interface wants.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IHookRegistry(Interface):
    """
    Dispatches hook events to plugins in priority order and applies Act
    (signals, policies, actions) to their results.

    The relay asks L{is_subscribed} before it builds a payload: when nothing
    subscribed, firing a hook costs one set lookup and nothing else.
    """

    def is_subscribed(hook_name: str) -> bool:
        """
        @param hook_name: a GatewayD hook RPC name such as C{"onTrafficFromClient"}
            (see L{gatewayd.hooks.names}).
        @return: True when at least one plugin registered this hook.  O(1), no allocation.
        """

    def run(hook_name: str, payload: dict) -> object:
        """
        Run the chain of plugins registered for C{hook_name}: the first gets
        C{payload}, each next one the previous result.  A terminal Act verdict
        stops the chain.

        Optional keyword C{parent=None}: the OpenTelemetry span the chain's
        span belongs under (the client connection's span when C{payload} is
        about one connection), passed explicitly because Twisted callbacks do
        not carry the current span.  gatewayd passes it only when tracing is
        on, so a registry that does not trace need not accept it (hence it is
        not part of the checked signature).

        @return: a L{Deferred} firing with the final result dict (never failing).
            Reserved keys: C{"__terminal__"} (bool) when a terminal action won; for
            traffic hooks, C{"request"}/C{"response"} bytes possibly rewritten, and on
            a terminal result C{"response"} holds what the client must receive
            (empty or absent means: close the connection).
            When no plugin is subscribed it fires synchronously with C{payload}.
        """

    def register(plugin: IPlugin) -> None:
        """
        Add C{plugin}; its hooks take their place by C{plugin.priority}
        (lower runs first).  Re-registering a plugin of the same name keeps its
        priority and replaces its hooks.
        """

    def unregister(name: str) -> None:
        """Remove every hook of the plugin called C{name}."""

    def plugins() -> list:
        """The registered plugins, in priority order."""


class IPlugin(Interface):
    """
    A plugin as the registry sees it, whether it runs in-process or behind gRPC.
    """

    name = Attribute("Unique plugin name (str).")
    priority = Attribute("Chain position (int): 1000 + index in gatewayd_plugins.yaml.")
    hooks = Attribute("frozenset of hook RPC names this plugin subscribed to.")
    metadata = Attribute("dict: GetPluginConfig's answer (id, description, config, ...).")

    def call_hook(hook_name: str, payload: dict) -> object:
        """
        Call one hook.

        @return: a L{Deferred} firing with the result dict, or failing when the
            plugin failed or timed out (the registry applies the failure mode).
        """


class IPluginClient(IPlugin):
    """An out-of-process plugin: a child process reached over gRPC."""

    def start() -> object:
        """Spawn, handshake and fetch metadata. @return: L{Deferred} firing with None."""

    def ping() -> object:
        """Health check. @return: L{Deferred} firing with True/False."""

    def stop() -> object:
        """GRPCController/Shutdown, then signals. @return: L{Deferred} firing with None."""


class ILoadBalancer(Interface):
    """
    Chooses, for each new client of a server group, which block (backend) serves it.
    """

    strategy = Attribute("Strategy name (str), e.g. C{ROUND_ROBIN}.")

    def candidates(client: object) -> list:
        """
        Rank the blocks for a new client; advances the strategy's state once.

        @param client: a L{gatewayd.loadbalancer.ClientInfo}.
        @return: block names (list of str), the strategy's choice first and the
            fallbacks after it in the strategy's own order (next on the ring,
            next in round robin, ...).  Blocks no rule allows are absent.  The
            caller skips blocks that are down or exhausted.
        """


class IBackendPool(Interface):
    """Pre-dialled backend connections for one block."""

    size = Attribute("Configured size (int).")
    idle_count = Attribute("Connections ready to hand out (int).")
    busy_count = Attribute("Connections serving a client (int).")
    waiting_count = Attribute("Clients queued for a connection (int).")
    healthy = Attribute("True when the backend answered the last dial (bool).")

    def acquire(timeout: float) -> object:
        """
        @return: a L{Deferred} firing with a backend connection, FIFO among waiters,
            or failing with L{gatewayd.errors.PoolExhausted} after C{timeout}
            seconds, or L{gatewayd.errors.BackendUnavailable} when the backend is down.
        """

    def release(connection: object) -> None:
        """The client left: close C{connection} and dial a fresh one in its place."""

    def start() -> None:
        """Dial C{size} connections and start the recycle timer."""

    def stop() -> object:
        """Close everything. @return: L{Deferred} firing when all sockets are closed."""
