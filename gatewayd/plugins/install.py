# -*- test-case-name: tests.integration.test_plugin_cli -*-
"""
C{gatewayd plugin install}: verify a plugin release archive, extract it
safely, checksum its executable and put its entry into C{gatewayd_plugins.yaml}.

Differences from GatewayD, on purpose:
  - each plugin is extracted into C{<output-dir>/<name>/} (GatewayD extracts
    every plugin into the same directory, so their C{gatewayd_plugin.yaml},
    README and LICENSE overwrite each other);
  - an archive is all-or-nothing: a refused archive leaves no files behind;
  - path-slip, link and size checks cannot be switched off;
  - the new plugins file is linted before it replaces the old one, and is
    replaced atomically.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gatewayd.config.files import parse_yaml
from gatewayd.config.lint import lint_plugins
from gatewayd.config.render import render_plugins
from gatewayd.errors import ConfigError
from gatewayd.plugins import release
from gatewayd.plugins.archive import ArchiveError, check_archive, extract, sha256_file

PLUGIN_YAML = "gatewayd_plugin.yaml"
CHECKSUMS = "checksums.txt"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DOC_SUFFIXES = (".yaml", ".yml", ".txt", ".md", ".json", ".sig", ".pem", ".asc")


class InstallError(Exception):
    """Installation refused; the message is the one line shown to the user."""


@dataclass
class Installed:
    name: str
    binary: Path
    checksum: str
    replaced: bool


def read_checksums(path: Path) -> dict[str, str]:
    """C{sha256sum} output (C{<hex>  <name>} or C{<hex> *<name>}) as {name: hex}."""
    sums: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split(None, 1)
        if len(fields) == 2 and _HEX64.match(fields[0]):
            sums[os.path.basename(fields[1].strip().lstrip("*"))] = fields[0].lower()
    return sums


def verify_archive(archive: Path, checksums: Path) -> str:
    """
    Check C{archive} against its line in C{checksums}.

    @return: the archive's sha256.
    @raise InstallError: no line for it, or a mismatch.
    """
    expected = read_checksums(checksums).get(archive.name)
    if expected is None:
        raise InstallError(f"{checksums} has no checksum for {archive.name}")
    actual = sha256_file(archive)
    if actual != expected:
        raise InstallError(f"checksum mismatch: {archive} has sha256 {actual}, "
                           f"{checksums} says {expected}")
    return actual


def find_binary(files: list[Path], name: str) -> Path:
    """
    The plugin's executable among the extracted files: named exactly C{name},
    else the one file whose name contains C{name} and is not a document.
    """
    candidates = [f for f in files if f.name == name]
    if not candidates:
        candidates = [f for f in files if name in f.name and not f.name.endswith(_DOC_SUFFIXES)]
    executables = [f for f in candidates if os.access(f, os.X_OK)]
    chosen = executables or candidates
    if len(chosen) != 1:
        listed = ", ".join(sorted(f.name for f in files))
        problem = "no file" if not chosen else "several files"
        raise InstallError(f"{problem} named like the plugin {name!r} in the archive ({listed})")
    return chosen[0]


def _check_inner_checksums(files: list[Path], binary: Path, digest: str) -> None:
    """A C{checksum(s).txt} shipped inside the archive must agree about the binary."""
    for f in files:
        if f.name in ("checksum.txt", CHECKSUMS):
            expected = read_checksums(f).get(binary.name)
            if expected is not None and expected != digest:
                raise InstallError(f"checksum mismatch: {binary.name} has sha256 {digest}, "
                                   f"the archive's {f.name} says {expected}")


def plugin_entry(text: str, origin: str, fallback_name: str) -> dict[str, Any]:
    """The first C{plugins[]} entry of a C{gatewayd_plugin.yaml}."""
    try:
        data = parse_yaml(text, origin)
    except ConfigError as e:
        raise InstallError(str(e)) from None
    plugins = data.get("plugins") if isinstance(data, dict) else None
    if not isinstance(plugins, list) or not plugins or not isinstance(plugins[0], dict):
        raise InstallError(f"{origin}: plugins: expected a list with at least one plugin entry")
    entry = dict(plugins[0])
    entry.setdefault("name", fallback_name)
    entry.setdefault("enabled", True)
    return entry


def load_plugins_file(path: Path) -> dict[str, Any]:
    """The plugins file as data; a missing file starts from C{plugin init}'s defaults."""
    if path.exists():
        try:
            data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        except (ConfigError, OSError, UnicodeDecodeError) as e:
            raise InstallError(str(e) if isinstance(e, ConfigError) else f"{path}: {e}") from None
    else:
        data = yaml.safe_load(render_plugins())
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InstallError(f"{path}: expected a mapping at the top level")
    if data.get("plugins") is None:
        data["plugins"] = []
    if not isinstance(data["plugins"], list):
        raise InstallError(f"{path}: plugins: expected a list")
    return data


def merge_entry(data: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Replace the entry with the same name, or append it.  @return: replaced?"""
    for index, existing in enumerate(data["plugins"]):
        if isinstance(existing, dict) and existing.get("name") == entry["name"]:
            data["plugins"][index] = entry
            return True
    data["plugins"].append(entry)
    return False


def prepare_plugins_file(path: Path, data: dict[str, Any]) -> Path:
    """Write C{data} beside C{path} and lint it.  @return: the temp file to commit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(data, f, sort_keys=False, default_flow_style=False)
        problems = lint_plugins(temp)
        if problems:
            raise InstallError("the updated plugins file would be invalid: "
                               + "; ".join(str(p).replace(temp, str(path)) for p in problems))
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def commit_plugins_file(path: Path, temp: Path, backup: bool) -> None:
    """Atomically replace C{path} by C{temp}, keeping C{path.bak} if asked."""
    try:
        if path.exists():
            if backup:
                shutil.copy2(path, str(path) + ".bak")
            shutil.copymode(path, temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def install_archive(archive: Path, name: str, output_dir: Path, plugins_file: Path, *,
                    checksums: Path | None = None, backup: bool = False,
                    plugin_yaml: str | None = None, url: str | None = None) -> Installed:
    """
    Install a local release archive.

    @param checksums: the release's C{checksums.txt}; default: the one next to
        the archive, if any (then the archive must be listed in it and match).
    @param plugin_yaml: the entry text when the archive has no C{gatewayd_plugin.yaml}.
    @param url: the C{url} to record when the entry has none.
    """
    if not archive.is_file():
        raise InstallError(f"{archive}: no such archive")
    if checksums is None and (archive.parent / CHECKSUMS).is_file():
        checksums = archive.parent / CHECKSUMS
    if checksums is not None:
        verify_archive(archive, checksums)
    else:
        print(f"warning: no {CHECKSUMS} next to {archive}; the archive itself is not verified",
              file=sys.stderr)
    if not _NAME.match(name):
        raise InstallError(f"plugin name {name!r}: use letters, digits, '.', '_' and '-'")
    target = output_dir / name
    # Extract beside the target and move it into place at the end, so a refused
    # archive (or a failed re-install) changes nothing.
    staged = output_dir / f".{name}.new-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        files = extract(str(archive), staged)
    except ArchiveError as e:
        raise InstallError(f"{archive.name}: {e}") from None
    try:
        binary = find_binary(files, name)
        digest = sha256_file(binary)
        _check_inner_checksums(files, binary, digest)
        yamls = sorted((f for f in files if f.name == PLUGIN_YAML), key=lambda f: len(f.parts))
        if yamls:
            entry = plugin_entry(yamls[0].read_text(encoding="utf-8"),
                                 f"{archive.name}:{yamls[0].relative_to(staged)}", name)
        elif plugin_yaml is not None:
            entry = plugin_entry(plugin_yaml, PLUGIN_YAML, name)
        else:
            raise InstallError(f"{archive.name}: has no {PLUGIN_YAML} to take the plugin entry from")
        if url and not entry.get("url"):
            entry["url"] = url
        if not os.access(binary, os.X_OK):
            binary.chmod(binary.stat().st_mode | 0o111)
        final_binary = target / binary.relative_to(staged)
        entry["localPath"] = str(final_binary)
        entry["checksum"] = digest
        data = load_plugins_file(plugins_file)
        replaced = merge_entry(data, entry)
        new_file = prepare_plugins_file(plugins_file, data)
        try:
            if target.exists():
                old = output_dir / f".{name}.old-{os.getpid()}"
                os.rename(target, old)
                os.rename(staged, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(staged, target)
        except BaseException:
            new_file.unlink(missing_ok=True)
            raise
        commit_plugins_file(plugins_file, new_file, backup)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return Installed(entry["name"], final_binary, digest, replaced)


def install_release(spec: str, output_dir: Path, plugins_file: Path, *, api: str | None = None,
                    backup: bool = False, pull_only: bool = False) -> Installed | Path:
    """
    Install C{github.com/org/repo@version} from the release API.

    @return: the installed plugin, or the verified archive with C{pull_only}.
    """
    source = release.parse_source(spec)
    if source is None:
        raise InstallError(f"{spec!r} is neither an archive (.tar.gz/.zip) nor "
                           "github.com/<org>/<repo>[@latest|@vX.Y.Z]")
    base = release.api_url(api)
    try:
        found = release.get_release(base, source)
        archive_asset, checksums_asset = release.pick_assets(found, source)
        if "/" in archive_asset["name"] or archive_asset["name"] in ("", ".", ".."):
            raise InstallError(f"asset name {archive_asset['name']!r} is not a file name")
        output_dir.mkdir(parents=True, exist_ok=True)
        download_dir = Path(tempfile.mkdtemp(prefix=".download-", dir=output_dir))
        try:
            archive = release.download(archive_asset["browser_download_url"],
                                       download_dir / archive_asset["name"])
            checksums = release.download(checksums_asset["browser_download_url"],
                                         download_dir / CHECKSUMS)
            verify_archive(archive, checksums)
            if pull_only:
                kept = output_dir / archive.name
                os.replace(archive, kept)
                return kept
            plugin_yaml = None
            if not _archive_has_plugin_yaml(archive):
                plugin_yaml = release.get_plugin_yaml(base, source, found.get("tag_name") or "HEAD")
            return install_archive(archive, source.repo, output_dir, plugins_file,
                                   checksums=checksums, backup=backup, plugin_yaml=plugin_yaml,
                                   url=f"github.com/{source.org}/{source.repo}@{source.version}")
        finally:
            shutil.rmtree(download_dir, ignore_errors=True)
    except release.ReleaseError as e:
        raise InstallError(str(e)) from None


def _archive_has_plugin_yaml(archive: Path) -> bool:
    try:
        return any(posixpath.basename(f) == PLUGIN_YAML for f in check_archive(str(archive)))
    except ArchiveError as e:
        raise InstallError(f"{archive.name}: {e}") from None
