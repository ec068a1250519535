"""twistd dropin: lazy, so scanning plugins never imports gatewayd (or a reactor)."""

from twisted.application.service import ServiceMaker

gatewayd = ServiceMaker(
    "gatewayd",
    "gatewayd.tap",
    "PostgreSQL database gateway: pooling, load balancing, plugins",
    "gatewayd",
)
