"""A query logger plugin: logs each query with its duration. See README.md."""

from examples.query_logger.plugin import QueryLogger

__all__ = ["QueryLogger"]
