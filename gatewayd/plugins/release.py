# -*- test-case-name: tests.integration.test_plugin_cli -*-
"""
Fetching a plugin release from a GitHub-style release API for
C{gatewayd plugin install github.com/<org>/<repo>@<version|latest>}.

The API base URL is configurable (C{--api-url}, C{$GATEWAYD_PLUGIN_API_URL})
so that a mirror, GitHub Enterprise or a test server can stand in for
C{https://api.github.com}.  Only the release JSON shape GitHub documents is
used: C{tag_name} and C{assets[]} with C{name} and C{browser_download_url}.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd import __version__

DEFAULT_API_URL = "https://api.github.com"
API_URL_ENV = "GATEWAYD_PLUGIN_API_URL"
#: Largest download accepted (an archive or checksums.txt).
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
TIMEOUT = 30.0

_SOURCE = re.compile(
    r"^(?:https?://)?github\.com/(?P<org>[A-Za-z0-9][A-Za-z0-9-]*)/(?P<repo>[A-Za-z0-9._-]+?)"
    r"(?:\.git)?(?:@(?P<version>latest|v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?))?$")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class ReleaseError(Exception):
    """The release cannot be found, downloaded or verified; one line why."""


@dataclass(frozen=True)
class Source:
    """A parsed C{github.com/org/repo@version}."""

    org: str
    repo: str
    version: str  # "latest" or a tag

    def __str__(self) -> str:
        return f"github.com/{self.org}/{self.repo}@{self.version}"


def parse_source(text: str) -> Source | None:
    """C{github.com/org/repo[@latest|@vX.Y.Z]}, optionally with http(s)://; else None."""
    match = _SOURCE.match(text.strip())
    if match is None:
        return None
    return Source(match["org"], match["repo"], match["version"] or "latest")


def platform_tags() -> tuple[str, str]:
    """(GOOS, GOARCH) of this machine, as release asset names spell them."""
    machine = platform.machine().lower()
    return platform.system().lower(), _ARCH.get(machine, machine)


def api_url(explicit: str | None) -> str:
    return (explicit or os.environ.get(API_URL_ENV) or DEFAULT_API_URL).rstrip("/")


def _request(url: str, accept: str) -> urllib.request.Request:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ReleaseError(f"refusing to fetch {url!r}: only http and https URLs are used")
    return urllib.request.Request(url, headers={
        "Accept": accept, "User-Agent": f"gatewayd/{__version__}",
        "X-GitHub-Api-Version": "2022-11-28"})


def _open(url: str, accept: str) -> Any:
    try:
        return urllib.request.urlopen(_request(url, accept), timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        raise ReleaseError(f"GET {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ReleaseError(f"GET {url}: {reason}") from None


def get_json(url: str) -> Any:
    with _open(url, "application/vnd.github+json") as response:
        body = response.read(16 * 1024 * 1024 + 1)
    if len(body) > 16 * 1024 * 1024:
        raise ReleaseError(f"GET {url}: answer larger than 16 MB")
    try:
        return json.loads(body)
    except ValueError:
        raise ReleaseError(f"GET {url}: the answer is not JSON") from None


def download(url: str, target: Path, limit: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Stream C{url} into C{target}, at most C{limit} bytes; no partial file is left."""
    partial = target.with_name(target.name + ".part")
    written = 0
    try:
        with _open(url, "application/octet-stream") as response, open(partial, "wb") as out:
            while chunk := response.read(1024 * 1024):
                written += len(chunk)
                if written > limit:
                    raise ReleaseError(f"GET {url}: larger than {limit // (1024 * 1024)} MB")
                out.write(chunk)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def get_release(base: str, source: Source) -> dict[str, Any]:
    """The release JSON: C{/releases/latest} or C{/releases/tags/<tag>}."""
    repo = f"{base}/repos/{urllib.parse.quote(source.org)}/{urllib.parse.quote(source.repo)}"
    if source.version == "latest":
        url = f"{repo}/releases/latest"
    else:
        url = f"{repo}/releases/tags/{urllib.parse.quote(source.version)}"
    release = get_json(url)
    if not isinstance(release, dict) or not isinstance(release.get("assets"), list):
        raise ReleaseError(f"GET {url}: not a release (no assets list)")
    return release


def pick_assets(release: dict[str, Any], source: Source) -> tuple[dict[str, str], dict[str, str]]:
    """
    (archive asset, checksums.txt asset) for this OS and architecture.

    @raise ReleaseError: none matches, or several do, or no checksums.txt.
    """
    goos, goarch = platform_tags()
    assets = [a for a in release["assets"] if isinstance(a, dict)
              and isinstance(a.get("name"), str) and isinstance(a.get("browser_download_url"), str)]
    tag = release.get("tag_name", source.version)
    matching = [a for a in assets if goos in a["name"] and goarch in a["name"]
                and a["name"].endswith(".tar.gz")]
    if not matching:
        names = ", ".join(a["name"] for a in assets) or "none"
        raise ReleaseError(f"release {tag} of {source.org}/{source.repo} has no {goos}/{goarch} "
                           f".tar.gz asset (assets: {names})")
    if len(matching) > 1:
        raise ReleaseError(f"release {tag} has several {goos}/{goarch} .tar.gz assets: "
                           + ", ".join(a["name"] for a in matching))
    checksums = [a for a in assets if a["name"] == "checksums.txt"]
    if not checksums:
        raise ReleaseError(f"release {tag} of {source.org}/{source.repo} has no checksums.txt "
                           "asset; refusing an archive that cannot be verified")
    return matching[0], checksums[0]


def get_plugin_yaml(base: str, source: Source, ref: str) -> str:
    """The repository's C{gatewayd_plugin.yaml} through the contents API (GatewayD's way)."""
    url = (f"{base}/repos/{urllib.parse.quote(source.org)}/{urllib.parse.quote(source.repo)}"
           f"/contents/gatewayd_plugin.yaml?ref={urllib.parse.quote(ref)}")
    answer = get_json(url)
    if not isinstance(answer, dict) or answer.get("encoding") != "base64":
        raise ReleaseError(f"GET {url}: no base64 file content")
    try:
        return base64.b64decode(answer.get("content", "")).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise ReleaseError(f"GET {url}: undecodable file content") from None
