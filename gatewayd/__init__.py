"""gatewayd: a PostgreSQL database gateway on Twisted."""

__version__ = "0.1.0"
