"""
C{gatewayd plugin init|list|lint|install|scaffold} through the real CLI
(C{python -m gatewayd plugin ...}): local archives (good, path-slip, link,
checksum mismatch), a GitHub-shaped release API served locally, and a
scaffolded plugin project loaded by a real gateway.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import platform
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from gatewayd.sdk.server import MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE
from tests.support.gateway import ROOT, Gateway, base_config, run_gatewayd
from tests.support.pg import wait_until
from tests.support.plugins import make_plugin_executable

pytestmark = pytest.mark.integration

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine().lower(),
                                                   platform.machine().lower())
PLUGIN_YAML = {"plugins": [{
    "name": "echo-plugin", "enabled": True, "url": "github.com/acme/echo-plugin@latest",
    "localPath": "./plugins/echo-plugin", "args": ["--mode", "normal"],
    "env": [f"MAGIC_COOKIE_KEY={MAGIC_COOKIE_KEY}", f"MAGIC_COOKIE_VALUE={MAGIC_COOKIE_VALUE}",
            "REDIS_PASSWORD=hunter2", "REDIS_URL=redis://app:s3cret@localhost:6379/0"],
    "checksum": "to be computed"}]}


def workdir(tmp_path: Path) -> Path:
    """The gateway's config and log files, inside the test's temp dir."""
    path = tmp_path / "gateway"
    path.mkdir()
    return path


def plugin(*args: str, cwd: Path | None = None) -> Any:
    return run_gatewayd("plugin", *args, cwd=cwd)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_archive(directory: Path, name: str = "echo-plugin", *, version: str = "v0.1.0",
                  extra: dict[str, bytes] | None = None, with_yaml: bool = True,
                  symlink: tuple[str, str] | None = None, kind: str = "tar.gz") -> Path:
    """A release archive like the template's build-release: binary, checksum.txt, yaml."""
    work = directory / f"build-{name}-{kind}"
    work.mkdir(parents=True, exist_ok=True)
    binary_path, digest = make_plugin_executable(work, name)
    members: dict[str, tuple[bytes, int]] = {
        name: (Path(binary_path).read_bytes(), 0o755),
        "checksum.txt": (f"{digest}  {name}\n".encode(), 0o644),
        "README.md": (b"# echo\n", 0o644),
    }
    if with_yaml:
        members["gatewayd_plugin.yaml"] = (yaml.safe_dump(PLUGIN_YAML).encode(), 0o644)
    for member, data in (extra or {}).items():
        members[member] = (data, 0o644)
    archive = directory / f"{name}-linux-{ARCH}-{version}.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for member, (data, mode) in members.items():
                info = zipfile.ZipInfo(member)
                info.external_attr = (0o100000 | mode) << 16
                zf.writestr(info, data)
    else:
        with tarfile.open(archive, "w:gz") as tar:
            for member, (data, mode) in members.items():
                info = tarfile.TarInfo(member)
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
            if symlink is not None:
                info = tarfile.TarInfo(symlink[0])
                info.type, info.linkname = tarfile.SYMTYPE, symlink[1]
                tar.addfile(info)
    return archive


def write_checksums(archive: Path, digest: str | None = None) -> Path:
    path = archive.parent / "checksums.txt"
    path.write_text(f"{digest or sha256(archive)}  {archive.name}\n")
    return path


# -- init / list / lint ---------------------------------------------------------------

def test_init_list_lint(tmp_path: Path) -> None:
    config = tmp_path / "gatewayd_plugins.yaml"
    done = plugin("init", "-p", str(config))
    assert done.returncode == 0, done.stderr
    assert f"Config file '{config}' was created successfully." in done.stdout
    again = plugin("init", "-p", str(config))
    assert again.returncode == 1 and "already exists" in again.stderr
    assert plugin("init", "-p", str(config), "--force").returncode == 0

    lint = plugin("lint", "-p", str(config))
    assert lint.returncode == 0 and "plugins config is valid" in lint.stdout, lint.stderr
    listed = plugin("list", "-p", str(config))
    assert listed.returncode == 0 and listed.stdout.strip() == "Total plugins: 0"

    data = yaml.safe_load(config.read_text())
    data["plugins"] = [
        dict(PLUGIN_YAML["plugins"][0], checksum="ab" * 32),
        {"name": "off", "enabled": False, "localPath": "/bin/true", "checksum": "cd" * 32},
        {"name": "fw", "module": "examples.sql_firewall.plugin:SQLFirewall"},
    ]
    config.write_text(yaml.safe_dump(data))
    listed = plugin("list", "-p", str(config))
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout
    assert out.startswith("Total plugins: 3\nPlugins:\n  Name: echo-plugin\n  Enabled: true\n"
                          "  Path: ./plugins/echo-plugin\n  Args: --mode normal\n  Env:\n"), out
    assert f"    MAGIC_COOKIE_VALUE={MAGIC_COOKIE_VALUE}\n" in out
    assert "REDIS_PASSWORD=<redacted>" in out and "hunter2" not in out
    assert "REDIS_URL=redis://app:<redacted>@localhost:6379/0" in out and "s3cret" not in out
    assert f"  Checksum: {'ab' * 32}\n" in out
    assert "  Module: examples.sql_firewall.plugin:SQLFirewall (in-process)" in out
    enabled = plugin("list", "-p", str(config), "--only-enabled")
    assert enabled.stdout.startswith("Total plugins: 2\n") and "Name: off" not in enabled.stdout

    data["defaultPolicy"] = "maybe"
    data["healthCheckPeriod"] = "soon"
    config.write_text(yaml.safe_dump(data))
    bad = plugin("lint", "-p", str(config))
    assert bad.returncode == 1
    assert "healthCheckPeriod" in bad.stderr and "defaultPolicy" in bad.stderr
    assert all(line.startswith(str(config)) for line in bad.stderr.splitlines()), bad.stderr


def test_list_and_lint_missing_file(tmp_path: Path) -> None:
    for command in ("list", "lint"):
        done = plugin(command, "-p", str(tmp_path / "nope.yaml"))
        assert done.returncode == 1
        assert done.stderr.strip().endswith("file not found"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


# -- install from a local archive -------------------------------------------------------

@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_install_local_archive(tmp_path: Path, kind: str) -> None:
    archive = build_archive(tmp_path / "dist", kind=kind)
    write_checksums(archive)
    config, out_dir = tmp_path / "gatewayd_plugins.yaml", tmp_path / "plugins"
    assert plugin("init", "-p", str(config)).returncode == 0
    original = config.read_text()
    done = plugin("install", str(archive), "--name", "echo-plugin", "-p", str(config),
                  "-o", str(out_dir), "--backup")
    assert done.returncode == 0, done.stderr
    binary = out_dir / "echo-plugin" / "echo-plugin"
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert (out_dir / "echo-plugin" / "gatewayd_plugin.yaml").is_file()
    entries = yaml.safe_load(config.read_text())["plugins"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["name"] == "echo-plugin" and entry["localPath"] == str(binary)
    assert entry["checksum"] == sha256(binary)
    assert entry["env"] == PLUGIN_YAML["plugins"][0]["env"]
    assert Path(str(config) + ".bak").read_text() == original
    assert plugin("lint", "-p", str(config)).returncode == 0

    # Installing again replaces the entry (and the files) rather than adding one.
    again = plugin("install", str(archive), "--name", "echo-plugin", "-p", str(config),
                   "-o", str(out_dir))
    assert again.returncode == 0, again.stderr
    assert "replaced in" in again.stdout
    assert len(yaml.safe_load(config.read_text())["plugins"]) == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["echo-plugin"]


@pytest.mark.parametrize("evil, expected", [
    ({"../../escaped.txt": b"x"}, "escapes the output directory with '..'"),
    ({"/tmp/absolute.txt": b"x"}, "has an absolute path"),
])
def test_install_refuses_path_slip(tmp_path: Path, evil: dict[str, bytes], expected: str) -> None:
    archive = build_archive(tmp_path / "dist", extra=evil)
    write_checksums(archive)
    config, out_dir = tmp_path / "gatewayd_plugins.yaml", tmp_path / "deep" / "plugins"
    done = plugin("install", str(archive), "-n", "echo-plugin", "-p", str(config),
                  "-o", str(out_dir))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gatewayd plugin install: ")
    assert expected in lines[0], lines
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "deep" / "escaped.txt").exists()
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    assert not config.exists()


def test_install_refuses_escaping_symlink(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "dist", symlink=("link", "/etc/passwd"))
    write_checksums(archive)
    out_dir = tmp_path / "plugins"
    done = plugin("install", str(archive), "-n", "echo-plugin", "-p",
                  str(tmp_path / "p.yaml"), "-o", str(out_dir))
    assert done.returncode == 1 and "is a link" in done.stderr, done.stderr
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


class Zeros(io.RawIOBase):
    """C{size} zero bytes, read in chunks (no 100 MB buffer in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_install_refuses_oversized_member(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "dist")
    big = tmp_path / "dist" / "big.tar.gz"
    with tarfile.open(archive) as source, tarfile.open(big, "w:gz", compresslevel=1) as tar:
        for member in source:
            tar.addfile(member, source.extractfile(member))
        info = tarfile.TarInfo("data/huge.bin")
        info.size = 100 * 1024 * 1024 + 1
        tar.addfile(info, Zeros(info.size))
    done = plugin("install", str(big), "-n", "echo-plugin", "-p", str(tmp_path / "p.yaml"),
                  "-o", str(tmp_path / "plugins"))
    assert done.returncode == 1
    assert "member 'data/huge.bin' is larger than 100 MB" in done.stderr, done.stderr
    assert not (tmp_path / "plugins" / "echo-plugin").exists()


def test_install_nested_archive(tmp_path: Path) -> None:
    """Release archives often hold one top directory: the binary and yaml are found in it."""
    flat = build_archive(tmp_path / "dist")
    nested = tmp_path / "nested.zip"
    with tarfile.open(flat) as source, zipfile.ZipFile(nested, "w") as zf:
        for member in source:
            info = zipfile.ZipInfo(f"echo-plugin-v0.1.0/{member.name}")
            info.external_attr = (0o100000 | member.mode) << 16
            zf.writestr(info, source.extractfile(member).read())
    config, out_dir = tmp_path / "p.yaml", tmp_path / "plugins"
    done = plugin("install", str(nested), "-n", "echo-plugin", "-p", str(config),
                  "-o", str(out_dir))
    assert done.returncode == 0, done.stderr
    binary = out_dir / "echo-plugin" / "echo-plugin-v0.1.0" / "echo-plugin"
    entry = yaml.safe_load(config.read_text())["plugins"][0]
    assert entry["localPath"] == str(binary) and entry["checksum"] == sha256(binary)


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_install_refuses_corrupt_archive(tmp_path: Path, kind: str) -> None:
    archive = build_archive(tmp_path / "dist", kind=kind)
    data = bytearray(archive.read_bytes())
    if kind == "zip":
        data[60:70] = b"\xff" * 10  # inside the first member's compressed bytes: bad CRC
    else:
        del data[len(data) // 2:]  # truncated
    archive.write_bytes(bytes(data))
    done = plugin("install", str(archive), "-n", "echo-plugin", "-p", str(tmp_path / "p.yaml"),
                  "-o", str(tmp_path / "plugins"))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"gatewayd plugin install: {archive.name}: "), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "plugins" / "echo-plugin").exists()


def test_install_refuses_checksum_mismatch(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "dist")
    write_checksums(archive, "0" * 64)
    config = tmp_path / "gatewayd_plugins.yaml"
    done = plugin("install", str(archive), "-n", "echo-plugin", "-p", str(config),
                  "-o", str(tmp_path / "plugins"))
    assert done.returncode == 1
    assert done.stderr.strip() == (f"gatewayd plugin install: checksum mismatch: {archive} has "
                                   f"sha256 {sha256(archive)}, {archive.parent / 'checksums.txt'} "
                                   f"says {'0' * 64}")
    assert not config.exists() and not (tmp_path / "plugins" / "echo-plugin").exists()


def test_install_archive_needs_name_and_yaml(tmp_path: Path) -> None:
    archive = build_archive(tmp_path / "dist", with_yaml=False)
    no_name = plugin("install", str(archive), "-p", str(tmp_path / "p.yaml"))
    assert no_name.returncode == 1 and "needs --name" in no_name.stderr
    no_yaml = plugin("install", str(archive), "-n", "echo-plugin", "-p", str(tmp_path / "p.yaml"),
                     "-o", str(tmp_path / "plugins"))
    assert no_yaml.returncode == 1 and "has no gatewayd_plugin.yaml" in no_yaml.stderr
    assert "no checksums.txt next to" in no_yaml.stderr  # warned: nothing to verify against
    assert not (tmp_path / "plugins" / "echo-plugin").exists()


# -- install from a GitHub-shaped release API -------------------------------------------

class FakeReleases:
    """A local server answering like api.github.com for one repository."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.requests: list[str] = []
        releases = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                releases.requests.append(self.path)
                status, body = releases.routes.get(self.path, (404, b'{"message": "Not Found"}'))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, repo: str, tag: str, archive: Path, checksums: str | None = None,
                latest: bool = True) -> None:
        assets = []
        for name, body in ((archive.name, archive.read_bytes()),
                           ("checksums.txt", (checksums or f"{sha256(archive)}  {archive.name}\n"
                                              ).encode())):
            path = f"/download/{tag}/{name}"
            self.routes[path] = (200, body)
            assets.append({"name": name, "browser_download_url": self.url + path,
                           "size": len(body)})
        # A decoy for another platform that must not be picked.
        assets.insert(0, {"name": f"{repo}-darwin-{ARCH}-{tag}.tar.gz",
                          "browser_download_url": self.url + "/nothing"})
        release = json.dumps({"tag_name": tag, "name": tag, "assets": assets}).encode()
        self.routes[f"/repos/acme/{repo}/releases/tags/{tag}"] = (200, release)
        if latest:
            self.routes[f"/repos/acme/{repo}/releases/latest"] = (200, release)

    def __enter__(self) -> FakeReleases:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def releases(tmp_path: Path) -> Iterator[FakeReleases]:
    with FakeReleases(tmp_path) as server:
        yield server


def test_install_from_release_api(tmp_path: Path, releases: FakeReleases) -> None:
    archive = build_archive(tmp_path / "dist", version="v1.2.3")
    releases.publish("echo-plugin", "v1.2.3", archive)
    config, out_dir = tmp_path / "gatewayd_plugins.yaml", tmp_path / "plugins"
    done = plugin("install", "github.com/acme/echo-plugin@latest", "-p", str(config),
                  "-o", str(out_dir), "--api-url", releases.url)
    assert done.returncode == 0, done.stderr
    assert "/repos/acme/echo-plugin/releases/latest" in releases.requests
    assert "/nothing" not in releases.requests
    entry = yaml.safe_load(config.read_text())["plugins"][0]
    binary = out_dir / "echo-plugin" / "echo-plugin"
    assert entry["localPath"] == str(binary) and entry["checksum"] == sha256(binary)
    assert sorted(p.name for p in out_dir.iterdir()) == ["echo-plugin"]  # downloads cleaned up

    # A tagged version, with the API URL from the environment.
    releases.requests.clear()
    tagged = run_gatewayd("plugin", "install", "https://github.com/acme/echo-plugin@v1.2.3",
                          "-p", str(config), "-o", str(out_dir),
                          env={"GATEWAYD_PLUGIN_API_URL": releases.url})
    assert tagged.returncode == 0, tagged.stderr
    assert releases.requests[0] == "/repos/acme/echo-plugin/releases/tags/v1.2.3"


def test_release_checksum_mismatch_and_missing_release(tmp_path: Path,
                                                       releases: FakeReleases) -> None:
    archive = build_archive(tmp_path / "dist", version="v2.0.0")
    releases.publish("echo-plugin", "v2.0.0", archive,
                     checksums=f"{'1' * 64}  {archive.name}\n")
    config, out_dir = tmp_path / "gatewayd_plugins.yaml", tmp_path / "plugins"
    bad = plugin("install", "github.com/acme/echo-plugin@v2.0.0", "-p", str(config),
                 "-o", str(out_dir), "--api-url", releases.url)
    assert bad.returncode == 1 and "checksum mismatch" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert not config.exists() and list(out_dir.iterdir()) == []

    missing = plugin("install", "github.com/acme/echo-plugin@v9.9.9", "-p", str(config),
                     "-o", str(out_dir), "--api-url", releases.url)
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith("releases/tags/v9.9.9: HTTP 404 Not Found")

    nonsense = plugin("install", "gitlab.com/acme/x", "-p", str(config))
    assert nonsense.returncode == 1 and "neither an archive" in nonsense.stderr


def test_release_without_yaml_uses_contents_api(tmp_path: Path, releases: FakeReleases) -> None:
    archive = build_archive(tmp_path / "dist", version="v3.0.0", with_yaml=False)
    releases.publish("echo-plugin", "v3.0.0", archive)
    content = base64.b64encode(yaml.safe_dump(PLUGIN_YAML).encode()).decode()
    releases.routes["/repos/acme/echo-plugin/contents/gatewayd_plugin.yaml?ref=v3.0.0"] = (
        200, json.dumps({"encoding": "base64", "content": content}).encode())
    config = tmp_path / "p.yaml"
    done = plugin("install", "github.com/acme/echo-plugin@v3.0.0", "-p", str(config),
                  "-o", str(tmp_path / "plugins"), "--api-url", releases.url)
    assert done.returncode == 0, done.stderr
    entry = yaml.safe_load(config.read_text())["plugins"][0]
    assert entry["url"] == "github.com/acme/echo-plugin@latest"  # the repository's own entry
    assert entry["checksum"] == sha256(tmp_path / "plugins" / "echo-plugin" / "echo-plugin")


def test_release_pull_only(tmp_path: Path, releases: FakeReleases) -> None:
    archive = build_archive(tmp_path / "dist", version="v1.0.0")
    releases.publish("echo-plugin", "v1.0.0", archive)
    out_dir = tmp_path / "plugins"
    done = plugin("install", "github.com/acme/echo-plugin", "--pull-only", "-p",
                  str(tmp_path / "p.yaml"), "-o", str(out_dir), "--api-url", releases.url)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out_dir.iterdir()] == [archive.name]
    assert sha256(out_dir / archive.name) == sha256(archive)
    assert not (tmp_path / "p.yaml").exists()


def test_installed_plugin_loads_in_gateway(tmp_path: Path, service_pg: str) -> None:
    archive = build_archive(tmp_path / "dist")
    write_checksums(archive)
    config, out_dir = tmp_path / "gatewayd_plugins.yaml", tmp_path / "plugins"
    assert plugin("install", str(archive), "-n", "echo-plugin", "-p", str(config),
                  "-o", str(out_dir)).returncode == 0
    plugins = yaml.safe_load(config.read_text())
    gateway = Gateway(base_config({"writes": service_pg}), plugins,
                      workdir=workdir(tmp_path)).start()
    try:
        wait_until(lambda: "plugin echo-plugin loaded" in gateway.output(),
                   what="the installed plugin to load")
    finally:
        gateway.stop()


# -- scaffold ------------------------------------------------------------------------------

def test_scaffold_project_loads_in_gateway(tmp_path: Path, service_pg: str) -> None:
    input_file = tmp_path / "input.yaml"
    input_file.write_text(yaml.safe_dump({
        "remote_url": "https://github.com/acme/acme-audit", "version": "0.2.0",
        "description": "Audits queries", "license": "MIT", "authors": ["Ada"]}))
    out_dir = tmp_path / "plugins"
    done = plugin("scaffold", "-i", str(input_file), "-o", str(out_dir))
    assert done.returncode == 0, done.stderr
    project = out_dir / "acme-audit"
    assert f"Plugin project created in {project}" in done.stdout
    entry_script = project / "bin" / "acme-audit"
    assert os.access(entry_script, os.X_OK)
    again = plugin("scaffold", "-i", str(input_file), "-o", str(out_dir))
    assert again.returncode == 1 and "exists and is not empty" in again.stderr
    missing = plugin("scaffold", "-i", str(tmp_path / "none.yaml"))
    assert missing.returncode == 1 and "file not found" in missing.stderr

    entry = yaml.safe_load((project / "gatewayd_plugin.yaml").read_text())["plugins"][0]
    entry.update(localPath=str(entry_script), checksum=sha256(entry_script))
    env = {"PYTHONPATH": os.pathsep.join([str(project), str(ROOT)]),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    gateway = Gateway(base_config({"writes": service_pg}), {"plugins": [entry]}, env=env,
                      workdir=workdir(tmp_path)).start()
    try:
        wait_until(lambda: "plugin acme-audit loaded" in gateway.output(),
                   what="the scaffolded plugin to load")
        assert "onTrafficFromClient" in gateway.output()
    finally:
        gateway.stop()
