# -*- test-case-name: tests.unit.test_config_loader -*-
"""
Loading both configuration files: lookup, YAML, defaults, environment
overrides, validation.  The one entry point the service uses is L{load}.

Precedence, lowest first (as GatewayD): defaults, file, C{GATEWAYD_*}
environment, then what an C{OnConfigLoaded} plugin changes (L{apply_flat}).
Every problem is collected and raised together as L{ConfigErrors}, one line
per problem naming the file (or the variable), the key and the problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from gatewayd.config.build import build_global, build_plugins
from gatewayd.config.environ import EnvOverrides
from gatewayd.config.files import GLOBAL_FILENAME, PLUGINS_FILENAME, find_file, read_yaml
from gatewayd.config.plain import to_plain, unflatten_into
from gatewayd.config.schema import GlobalConfig, Logger, PluginsConfig
from gatewayd.config.validate import validate_global, validate_plugins
from gatewayd.errors import ConfigError, ConfigErrors


@dataclass
class Config:
    """Both files, loaded and validated."""

    global_: GlobalConfig
    plugins: PluginsConfig
    global_path: str | None
    plugins_path: str | None

    def logger(self, group: str) -> Logger:
        """The logger of a server group: C{loggers.<group>}, else C{loggers.default}."""
        loggers = self.global_.loggers
        return loggers[group] if group in loggers else loggers["default"]

    def blocks(self, group: str) -> list[str]:
        """
        The blocks server C{group} balances over, in order: its C{proxies}
        list when given, else every block of C{proxies.<group>} in file order.
        """
        server = self.global_.servers[group]
        if server.proxies is not None:
            return list(server.proxies)
        return list(self.global_.proxies.get(group, {}))


def load(global_path: str | None = None, plugins_path: str | None = None,
         env: Mapping[str, str] | None = None) -> Config:
    """
    Load, override and validate both files.

    @param global_path: C{gatewayd.yaml}; None looks in C{.} then C{/etc}.
    @param plugins_path: C{gatewayd_plugins.yaml}; None looks in C{.} then
        C{/etc} and uses the defaults when there is none.  A path that is given
        must exist.
    @param env: the environment (default C{os.environ}).
    @raise ConfigErrors: every problem found.
    """
    env = os.environ if env is None else env
    errors: list[ConfigError] = []
    global_data = plugins_data = None
    if global_path is None:
        global_path = find_file(GLOBAL_FILENAME)
        if global_path is None:
            errors.append(ConfigError(
                GLOBAL_FILENAME, "",
                "not found in ./ or /etc/ (write one with 'gatewayd config init', or pass --config)"))
    if global_path is not None:
        global_data = _read(global_path, errors)
    if plugins_path is None:
        plugins_path = find_file(PLUGINS_FILENAME)
    if plugins_path is not None:
        plugins_data = _read(plugins_path, errors)
    if errors:
        raise ConfigErrors(errors)

    global_cfg, global_errors = build_global(global_data, global_path)
    plugins_cfg, plugins_errors = build_plugins(plugins_data, plugins_path)
    overrides = EnvOverrides()
    overrides.apply(env, global_cfg, plugins_cfg)
    errors = global_errors + plugins_errors + overrides.errors
    if errors:
        raise ConfigErrors(errors)

    errors = _blame_env(validate_global(global_cfg, global_path), overrides.origins["global"])
    errors += _blame_env(validate_plugins(plugins_cfg, plugins_path), overrides.origins["plugins"])
    if errors:
        raise ConfigErrors(errors)
    return Config(global_cfg, plugins_cfg, global_path, plugins_path)


def _read(path: str, errors: list[ConfigError]) -> Any:
    try:
        return read_yaml(path)
    except ConfigError as e:
        errors.append(e)
        return None


def _blame_env(errors: list[ConfigError], origins: dict[str, str]) -> list[ConfigError]:
    """Name the variable, not the file, when the environment set the bad value."""
    result = []
    for error in errors:
        var = next((v for k, v in origins.items()
                    if error.key == k or error.key.startswith((k + ".", k + "["))), None)
        result.append(ConfigError(None, var, f"{error.key}: {error.problem}") if var else error)
    return result


def apply_flat(config: GlobalConfig, flat: dict[str, Any], source: str) -> GlobalConfig:
    """
    Merge flat koanf-style keys (what an C{OnConfigLoaded} plugin returned)
    into a copy of C{config}, then check the result like a file.

    @param source: names the origin in errors, e.g. C{"plugin 'x' (OnConfigLoaded)"}.
    @return: the new config; C{config} is left untouched.
    @raise ConfigErrors: unknown keys, bad types or an invalid result, by key.
    """
    plain = to_plain(config)
    bad_keys = unflatten_into(plain, {str(k): v for k, v in flat.items()})
    errors = [ConfigError(source, key, "cannot set a key inside a value") for key in bad_keys]
    merged, build_errors = build_global(plain, source, lenient_numbers=True)
    errors += build_errors
    if not errors:
        errors = validate_global(merged, source)
    if errors:
        raise ConfigErrors(errors)
    return merged
