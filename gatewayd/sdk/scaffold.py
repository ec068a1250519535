# -*- test-case-name: tests.integration.test_sdk_scaffold -*-
"""
C{scaffold()}: a new, working Python plugin project (GatewayD's
C{gatewayd plugin scaffold}, for the Python SDK).

The project has a plugin module with one hook, a test that calls it with
real protocol bytes, a C{pyproject.toml} with a console script, an
executable entry script C{bin/<name>} (what C{localPath} names), a
C{gatewayd_plugin.yaml} entry ready to paste (with how to compute its
checksum), a Makefile and a README.

    python -m gatewayd.sdk.scaffold my-plugin --output-dir ./plugins
"""

from __future__ import annotations

import argparse
import keyword
import os
import re
import stat
import sys
from pathlib import Path
from typing import Sequence

from gatewayd.sdk.plugin import hook_name
from gatewayd.sdk.server import MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE

__all__ = ["scaffold", "main"]

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


def _package(name: str) -> str:
    package = name.replace("-", "_")
    if keyword.iskeyword(package):
        package += "_plugin"
    return package


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", name))


def _files(name: str, package: str, cls: str, hook: str, description: str, version: str,
           authors: Sequence[str], license: str, remote_url: str) -> dict[str, str]:
    authors_py = ", ".join(repr(a) for a in authors)
    authors_toml = ", ".join(f'{{name = "{a}"}}' for a in authors)
    return {
        "pyproject.toml": f'''[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "{description}"
requires-python = ">=3.11"
license = {{text = "{license or 'UNLICENSED'}"}}
authors = [{authors_toml}]
dependencies = ["gatewayd"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.scripts]
{name} = "{package}.plugin:main"

[tool.setuptools]
packages = ["{package}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
''',
        f"{package}/__init__.py": f'"""{description or name}"""\n\nfrom {package}.plugin import {cls}\n\n__all__ = ["{cls}"]\n',
        f"{package}/plugin.py": f'''"""
{description or name}: a gatewayd / GatewayD plugin built with gatewayd.sdk.

Runs in the gateway's process (gatewayd_plugins.yaml: module: {package}.plugin:{cls})
or as a plugin process (localPath: the bin/{name} script, for gatewayd or GatewayD).
"""

from __future__ import annotations

import os

from gatewayd.sdk import Plugin, hook, signals  # noqa: F401 (signals: see below)
from gatewayd.sdk.postgres import get_query


class {cls}(Plugin):
    name = "{name}"
    version = "{version}"
    description = "{description}"
    authors = ({authors_py}{"," if len(authors) == 1 else ""})
    license = "{license}"
    remote_url = "{remote_url}"

    @hook("{hook}")
    def on_{_snake(hook)}(self, payload: dict) -> dict | None:
        """
        Called for every event of this hook; return the (possibly changed)
        payload, or None for "unchanged".  To answer the client yourself:
            payload["response"] = gatewayd.sdk.postgres.error_response_bytes(...)
            payload["__signals__"] = [signals.terminate()]
        """
        query = get_query(payload.get("request"))
        if query is not None:
            self.log.info("query", query=query)
        return None


def main() -> None:
    """Entry point of the plugin process; settings come from the environment."""
    {cls}.serve({{k[len("PLUGIN_SETTING_"):]: v for k, v in os.environ.items()
                 if k.startswith("PLUGIN_SETTING_")}})


if __name__ == "__main__":
    main()
''',
        "tests/test_plugin.py": f'''"""Tests for {cls}: call the hook with real PostgreSQL protocol bytes."""

from typing import Any

from gatewayd import pgwire
from gatewayd.sdk.log import PluginLog

from {package}.plugin import {cls}


class CaptureLog(PluginLog):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def log(self, level: str, message: str, **fields: Any) -> None:
        self.events.append((level, message, fields))


def test_logs_the_query() -> None:
    log = CaptureLog()
    plugin = {cls}(log=log)
    payload = {{"client": {{"local": "127.0.0.1:15432", "remote": "127.0.0.1:50000"}},
               "request": pgwire.query("SELECT 1")}}
    assert plugin.on_{_snake(hook)}(payload) is None  # unchanged
    assert log.events == [("info", "query", {{"query": "SELECT 1"}})]


def test_metadata() -> None:
    config = {cls}().plugin_config()
    assert config["id"]["name"] == "{name}"
    assert config["hooks"] == [{_number(hook)}]
''',
        f"bin/{name}": f'''#!/usr/bin/env python3
"""The plugin process gatewayd or GatewayD starts (localPath)."""

from {package}.plugin import main

main()
''',
        "gatewayd_plugin.yaml": f'''# Paste into gatewayd_plugins.yaml (plugins: list).
#
# checksum: the SHA-256 of the file localPath names.  Compute it after every change:
#     sha256sum bin/{name}        (or: make checksum)
# For a script only the script itself is covered, not the interpreter or the
# imported modules; ship a single-file build (make zipapp) for a stronger guarantee.
plugins:
  - name: {name}
    enabled: true
    url: {remote_url or "github.com/<owner>/" + name}@latest
    localPath: ./plugins/{name}/bin/{name}
    args: []
    env:
      - MAGIC_COOKIE_KEY={MAGIC_COOKIE_KEY}
      - MAGIC_COOKIE_VALUE={MAGIC_COOKIE_VALUE}
      - LOG_LEVEL=info
    checksum: <sha256 of ./plugins/{name}/bin/{name}>
    # gatewayd only: run it in the gateway's process instead (no localPath/checksum):
    # module: {package}.plugin:{cls}
    # config: {{}}
    # failureMode: open
''',
        "Makefile": f'''.PHONY: test checksum zipapp

test:
\tpython -m pytest -q

checksum:
\tsha256sum bin/{name}

# One file holding the package (gatewayd itself must be installed for the interpreter).
zipapp:
\trm -rf build/zipapp && mkdir -p build/zipapp dist
\tcp -r {package} build/zipapp/
\tpython -m zipapp build/zipapp -m "{package}.plugin:main" -p "/usr/bin/env python3" -o dist/{name}.pyz
\tsha256sum dist/{name}.pyz
''',
        "README.md": f'''# {name}

{description or "A gatewayd / GatewayD plugin."}

## Develop

    pip install -e '.[test]'
    make test

The hook lives in `{package}/plugin.py`; see the gatewayd SDK guide (docs/plugins.md)
for payloads, signals and the PostgreSQL helpers.

## Run inside gatewayd (no separate process)

    plugins:
      - name: {name}
        module: {package}.plugin:{cls}
        config: {{}}

## Run as a plugin process (gatewayd or GatewayD)

Copy the entry from `gatewayd_plugin.yaml`, set `localPath` to the `bin/{name}` script (or
the `make zipapp` build) and `checksum` to its SHA-256 (`make checksum`).  The host
starts it with the go-plugin handshake; it answers over gRPC with AutoMTLS.
Settings: environment variables `PLUGIN_SETTING_<key>=<value>` in the entry's `env`.
''',
    }


def _snake(hook: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", hook).lower()


def _number(hook: str) -> int:
    from gatewayd.hooks.names import NUMBER_BY_NAME

    return NUMBER_BY_NAME[hook]


def scaffold(output_dir: str | os.PathLike[str], name: str, *, description: str = "",
             version: str = "0.1.0", authors: Sequence[str] = (), license: str = "",
             remote_url: str = "", hook: str = "onTrafficFromClient",
             overwrite: bool = False) -> Path:
    """
    Write a new plugin project in C{output_dir/name}.

    @param name: the plugin's name, lower case with dashes (C{my-plugin}).
    @param hook: the hook the generated plugin handles (any spelling).
    @return: the project directory.
    @raise ValueError: bad name or hook.
    @raise FileExistsError: the directory exists and is not empty (unless C{overwrite}).
    """
    if not _NAME.match(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and dashes")
    for text, what in ((description, "description"), (license, "license"),
                       (remote_url, "remote_url"), (version, "version"), *((a, "author") for a in authors)):
        if '"' in text or "\\" in text or "\n" in text:
            raise ValueError(f"{what} must not contain quotes, backslashes or newlines")
    hook = hook_name(hook)
    project = Path(output_dir) / name
    if project.exists() and any(project.iterdir()) and not overwrite:
        raise FileExistsError(f"{project} exists and is not empty")
    package = _package(name)
    files = _files(name, package, _class_name(name), hook, description, version, tuple(authors),
                   license, remote_url)
    for relative, content in files.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    entry = project / "bin" / name
    entry.chmod(entry.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return project


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatewayd.sdk.scaffold",
                                     description="Create a gatewayd/GatewayD plugin project.")
    parser.add_argument("name", help="plugin name, e.g. my-plugin")
    parser.add_argument("--output-dir", "-o", default=".", help="where to create it (.)")
    parser.add_argument("--description", default="")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--author", action="append", default=[], dest="authors")
    parser.add_argument("--license", default="")
    parser.add_argument("--remote-url", default="", help="e.g. github.com/me/my-plugin")
    parser.add_argument("--hook", default="onTrafficFromClient")
    args = parser.parse_args(argv)
    try:
        project = scaffold(args.output_dir, args.name, description=args.description,
                           version=args.version, authors=args.authors, license=args.license,
                           remote_url=args.remote_url, hook=args.hook)
    except (ValueError, FileExistsError) as e:
        print(f"scaffold: {e}", file=sys.stderr)
        return 2
    print(project)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
