# -*- test-case-name: tests.unit.test_config_loader -*-
"""
Finding and reading the two YAML files.

Lookup follows GatewayD: C{./<name>}, then C{/etc/<name>}.  Reading is
C{yaml.safe_load} semantics plus one check PyYAML does not make: a key written
twice in the same mapping is an error (PyYAML keeps the last one silently).
"""

from __future__ import annotations

import os

import yaml

from gatewayd.errors import ConfigError

GLOBAL_FILENAME = "gatewayd.yaml"
PLUGINS_FILENAME = "gatewayd_plugins.yaml"
SEARCH_DIRS = (".", "/etc")


def find_file(name: str) -> str | None:
    """The first existing C{<dir>/<name>} of L{SEARCH_DIRS}, or None."""
    for directory in SEARCH_DIRS:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return None


class _StrictSafeLoader(yaml.SafeLoader):
    """C{SafeLoader} that refuses duplicate keys in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                marker = (type(key), key)  # 1 and true are different keys
                duplicate = marker in seen
                seen.add(marker)
            except TypeError:  # unhashable key: let PyYAML report it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, path: str) -> object:
    """
    Parse YAML text.

    @raise ConfigError: one line with the file, line and column.
    """
    try:
        return yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "syntax error"
        raise ConfigError(path, "", f"invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, "", f"invalid YAML: {e}") from None


def read_yaml(path: str) -> dict | None:
    """
    Read a config file: a mapping at the top, or None when the file is empty.

    @raise ConfigError: missing, unreadable, not UTF-8, bad YAML, not a mapping.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "is not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror}") from None
    data = parse_yaml(text, path)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(path, "", "expected a mapping of keys at the top level")
    return data
