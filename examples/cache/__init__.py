"""gatewayd's Redis query cache plugin (see docs/cache.md)."""
