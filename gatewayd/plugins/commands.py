# -*- test-case-name: tests.integration.test_plugin_cli -*-
"""
The C{gatewayd plugin} subcommands, as GatewayD's: C{init}, C{list}, C{lint},
C{install} and C{scaffold}.

L{gatewayd.cli} calls L{add_commands}; each subcommand's C{func(args)}
returns the exit code (0, or 1 with one line saying what is wrong on stderr).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from gatewayd.config.commands import write_config
from gatewayd.config.files import PLUGINS_FILENAME, find_file, read_yaml
from gatewayd.config.lint import lint_plugins
from gatewayd.config.render import render_plugins
from gatewayd.errors import ConfigError

_DEFAULT_FILE = os.path.join(".", PLUGINS_FILENAME)
_SECRET_NAME = re.compile(r"PASS(WORD|WD)?|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|"
                          r"AUTH|DSN", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")
REDACTED = "<redacted>"


def add_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register C{plugin init|list|lint|install|scaffold} under C{subparsers}."""
    plugin = subparsers.add_parser("plugin", help="manage plugins",
                                   description="Create, check, list, install and scaffold plugins.")
    plugin.set_defaults(func=lambda args: _usage(plugin))
    commands = plugin.add_subparsers(dest="plugin_command",
                                     metavar="{init,list,lint,install,scaffold}")

    init = commands.add_parser("init", help="write a commented gatewayd_plugins.yaml",
                               description="Write the default plugins configuration file.")
    _plugin_config(init, _DEFAULT_FILE)
    init.add_argument("-f", "--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=run_init)

    lister = commands.add_parser("list", help="list the configured plugins",
                                 description="List the plugins of the plugins configuration file.")
    _plugin_config(lister, None)
    lister.add_argument("-e", "--only-enabled", action="store_true", help="only enabled plugins")
    lister.set_defaults(func=run_list)

    lint = commands.add_parser("lint", help="check the plugins configuration file",
                               description="Check the plugins file against the schema and "
                                           "every validation rule.")
    _plugin_config(lint, None)
    lint.set_defaults(func=run_lint)

    install = commands.add_parser(
        "install", help="install a plugin from a release archive or a GitHub release",
        description="Install a plugin: verify the release archive against checksums.txt, "
                    "extract it into <output-dir>/<name>/, checksum its executable and add "
                    "or replace its entry (from the archive's gatewayd_plugin.yaml) in the "
                    "plugins file.")
    install.add_argument("source", metavar="ARCHIVE|github.com/ORG/REPO[@VERSION]",
                         help="a local .tar.gz/.zip (with --name), or a release: "
                              "@latest (default) or @vX.Y.Z")
    _plugin_config(install, _DEFAULT_FILE)
    install.add_argument("-o", "--output-dir", default="./plugins",
                         help="where plugins are extracted (default: ./plugins)")
    install.add_argument("-n", "--name", help="the plugin's name (required for an archive)")
    install.add_argument("--checksums", help="checksums.txt for a local archive "
                                             "(default: the one next to it, if any)")
    install.add_argument("--backup", action="store_true",
                         help="keep the previous plugins file as <file>.bak")
    install.add_argument("--pull-only", action="store_true",
                         help="download and verify the release archive only")
    install.add_argument("--api-url", default=None,
                         help="release API base URL (default: $GATEWAYD_PLUGIN_API_URL, "
                              "else https://api.github.com)")
    install.set_defaults(func=run_install)

    scaffold = commands.add_parser("scaffold", help="create a Python plugin project",
                                   description="Create a Python plugin project from an input "
                                               "file (GatewayD's keys: remote_url, version, "
                                               "description, license, authors; ours: name, hook).")
    scaffold.add_argument("-i", "--input-file", default="input.yaml",
                          help="input file (default: input.yaml)")
    scaffold.add_argument("-o", "--output-dir", default="./plugins",
                          help="where the project directory is created (default: ./plugins)")
    scaffold.set_defaults(func=run_scaffold)
    return plugin


def _plugin_config(parser: argparse.ArgumentParser, default: str | None) -> None:
    where = default or "./gatewayd_plugins.yaml, then /etc/gatewayd_plugins.yaml"
    parser.add_argument("-p", "--plugin-config", default=default,
                        help=f"plugins config file (default: {where})")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    print("gatewayd plugin: choose a subcommand: init, list, lint, install or scaffold",
          file=sys.stderr)
    return 2


def _fail(command: str, problem: Any) -> int:
    print(f"gatewayd plugin {command}: {problem}", file=sys.stderr)
    return 1


def _existing_file(args: argparse.Namespace) -> str | None:
    path = args.plugin_config or find_file(PLUGINS_FILENAME)
    if path is None:
        print(f"{PLUGINS_FILENAME}: not found in ./ or /etc/ (pass --plugin-config)",
              file=sys.stderr)
    return path


# -- init / lint -------------------------------------------------------------------

def run_init(args: argparse.Namespace) -> int:
    """C{gatewayd plugin init}."""
    return write_config(args.plugin_config, render_plugins(), args.force)


def run_lint(args: argparse.Namespace) -> int:
    """C{gatewayd plugin lint}: 0 when the file is valid."""
    path = _existing_file(args)
    if path is None:
        return 1
    problems = lint_plugins(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print("plugins config is valid")
    return 0


# -- list ----------------------------------------------------------------------------

def redact_env(item: str) -> str:
    """C{KEY=value} with the value hidden when the name looks secret, and URL passwords hidden."""
    key, sep, value = item.partition("=")
    if not sep:
        return item
    if _SECRET_NAME.search(key):
        return f"{key}={REDACTED}" if value else item
    return f"{key}={_URL_PASSWORD.sub(lambda m: m['scheme'] + REDACTED + '@', value)}"


def run_list(args: argparse.Namespace) -> int:
    """C{gatewayd plugin list}: GatewayD's layout, secrets in C{env} redacted."""
    path = _existing_file(args)
    if path is None:
        return 1
    try:
        data = read_yaml(path) or {}
    except ConfigError as e:
        return _fail("list", e)
    plugins = data.get("plugins") if isinstance(data, dict) else None
    if plugins is None:
        plugins = []
    if not isinstance(plugins, list) or not all(isinstance(p, dict) for p in plugins):
        return _fail("list", ConfigError(path, "plugins", "expected a list of plugin entries"))
    if args.only_enabled:
        plugins = [p for p in plugins if p.get("enabled", True) is True]
    print(f"Total plugins: {len(plugins)}")
    if not plugins:
        return 0
    print("Plugins:")
    for p in plugins:
        print(f"  Name: {p.get('name', '')}")
        print(f"  Enabled: {str(p.get('enabled', True)).lower()}")
        if p.get("module"):
            print(f"  Module: {p['module']} (in-process)")
        else:
            print(f"  Path: {p.get('localPath', '') or ''}")
        args_list = p.get("args") or []
        print(f"  Args: {' '.join(str(a) for a in args_list) if isinstance(args_list, list) else args_list}")
        print("  Env:")
        for item in p.get("env") or []:
            print(f"    {redact_env(str(item))}")
        if not p.get("module"):
            print(f"  Checksum: {p.get('checksum', '') or ''}")
    return 0


# -- install -------------------------------------------------------------------------

def run_install(args: argparse.Namespace) -> int:
    """C{gatewayd plugin install}: a local archive (with C{--name}) or a GitHub release."""
    from gatewayd.plugins.install import InstallError, install_archive, install_release

    source = args.source
    output_dir = Path(args.output_dir)
    plugins_file = Path(args.plugin_config)
    try:
        if source.endswith((".tar.gz", ".tgz", ".zip")):
            if not args.name:
                return _fail("install", "installing from an archive needs --name <plugin name>")
            if args.pull_only:
                return _fail("install", "--pull-only applies to github.com/... releases only")
            result = install_archive(Path(source), args.name, output_dir, plugins_file,
                                     checksums=Path(args.checksums) if args.checksums else None,
                                     backup=args.backup)
        else:
            result = install_release(source, output_dir, plugins_file, api=args.api_url,
                                     backup=args.backup, pull_only=args.pull_only)
    except InstallError as e:
        return _fail("install", e)
    except OSError as e:
        return _fail("install", f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
    if isinstance(result, Path):
        print(f"Plugin archive downloaded and verified: {result}")
        return 0
    action = "replaced in" if result.replaced else "added to"
    print(f"Plugin {result.name} installed: {result.binary} (sha256 {result.checksum}); "
          f"entry {action} {plugins_file}")
    return 0


# -- scaffold ------------------------------------------------------------------------

def run_scaffold(args: argparse.Namespace) -> int:
    """C{gatewayd plugin scaffold}: GatewayD's C{input.yaml}, a Python SDK project."""
    from gatewayd.sdk.scaffold import scaffold

    try:
        data = read_yaml(args.input_file)
    except ConfigError as e:
        return _fail("scaffold", e)
    if not isinstance(data, dict):
        return _fail("scaffold", f"{args.input_file}: expected a mapping with remote_url, "
                                 "version, description, license, authors")
    remote_url = str(data.get("remote_url") or "")
    name = str(data.get("name") or remote_url.rstrip("/").rsplit("/", 1)[-1])
    if not name:
        return _fail("scaffold", f"{args.input_file}: remote_url: required (e.g. "
                                 "github.com/me/my-plugin), or give name")
    authors = data.get("authors") or []
    if isinstance(authors, str):
        authors = [authors]
    remote_url = re.sub(r"^https?://", "", remote_url)
    try:
        project = scaffold(args.output_dir, name, description=str(data.get("description") or ""),
                           version=str(data.get("version") or "0.1.0"),
                           authors=[str(a) for a in authors],
                           license=str(data.get("license") or ""), remote_url=remote_url,
                           hook=str(data.get("hook") or "onTrafficFromClient"))
    except (ValueError, FileExistsError) as e:
        return _fail("scaffold", f"{args.input_file}: {e}" if isinstance(e, ValueError) else
                     f"{e} (remove it or choose another --output-dir)")
    except OSError as e:
        return _fail("scaffold", f"{e.filename}: {e.strerror}")
    print(f"Plugin project created in {project}")
    return 0
