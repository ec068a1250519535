"""
The out-of-process plugin host: spawning GatewayD-compatible plugin processes
(hashicorp/go-plugin handshake), talking to them over gRPC, health checks,
reloads and the metrics merger.  L{gatewayd.plugins.structs} converts payloads.
"""
