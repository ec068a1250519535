"""Example plugins built with L{gatewayd.sdk} (importable from the repository root)."""
