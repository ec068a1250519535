# -*- test-case-name: tests.unit.test_config_commands -*-
"""
The C{gatewayd config} subcommands: C{init} writes a commented file,
C{lint} checks files without starting anything.

L{gatewayd.cli} calls L{add_commands}; each subcommand's C{func(args)}
returns the exit code (0, or 1 with one line per problem on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys

from gatewayd.config.files import GLOBAL_FILENAME, PLUGINS_FILENAME, find_file
from gatewayd.config.lint import lint_global, lint_plugins
from gatewayd.config.render import EXAMPLES, render_global


def add_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register C{config init} and C{config lint} under C{subparsers}."""
    config = subparsers.add_parser("config", help="create or check configuration files",
                                   description="Create or check gatewayd configuration files.")
    config.set_defaults(func=lambda args: _usage(config))
    commands = config.add_subparsers(dest="config_command", metavar="{init,lint}")

    init = commands.add_parser("init", help="write a commented gatewayd.yaml",
                               description="Write a commented global configuration file.")
    init.add_argument("-c", "--config", default=os.path.join(".", GLOBAL_FILENAME),
                      help="file to write (default: ./gatewayd.yaml)")
    init.add_argument("-f", "--force", action="store_true", help="overwrite an existing file")
    init.add_argument("--example", choices=EXAMPLES, default="default",
                      help="default: one PostgreSQL server; multi-pool: writes and reads "
                           "blocks behind weighted rules")
    init.set_defaults(func=run_init)

    lint = commands.add_parser("lint", help="check configuration files",
                               description="Check the global file, and the plugins file when "
                                           "given or found, against the schema and every "
                                           "validation rule.")
    lint.add_argument("-c", "--config", default=None,
                      help="global config file (default: ./gatewayd.yaml, then /etc/gatewayd.yaml)")
    lint.add_argument("-p", "--plugin-config", default=None,
                      help="plugins config file (default: ./gatewayd_plugins.yaml, then /etc/...)")
    lint.set_defaults(func=run_lint)
    return config


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    print("gatewayd config: choose a subcommand: init or lint", file=sys.stderr)
    return 2


def write_config(path: str, text: str, force: bool) -> int:
    """
    Write C{text} to C{path}, refusing to replace a file unless C{force}.
    Shared with C{gatewayd plugin init}.
    """
    existed = os.path.exists(path)
    if existed and not force:
        print(f"Config file '{path}' already exists (use --force to overwrite it)", file=sys.stderr)
        return 1
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        print(f"Config file '{path}' could not be written: {e.strerror}", file=sys.stderr)
        return 1
    print(f"Config file '{path}' was {'overwritten' if existed else 'created'} successfully.")
    return 0


def run_init(args: argparse.Namespace) -> int:
    """C{gatewayd config init}."""
    return write_config(args.config, render_global(args.example), args.force)


def run_lint(args: argparse.Namespace) -> int:
    """C{gatewayd config lint}: 0 when every file checked is valid."""
    global_path = args.config or find_file(GLOBAL_FILENAME)
    if global_path is None:
        print(f"{GLOBAL_FILENAME}: not found in ./ or /etc/ (pass --config)", file=sys.stderr)
        return 1
    status = _report(lint_global(global_path), "global config is valid")
    plugins_path = args.plugin_config or find_file(PLUGINS_FILENAME)
    if plugins_path is not None:
        status |= _report(lint_plugins(plugins_path), "plugins config is valid")
    return status


def _report(errors: list, success: str) -> int:
    if not errors:
        print(success)
        return 0
    for error in errors:
        print(error, file=sys.stderr)
    return 1
