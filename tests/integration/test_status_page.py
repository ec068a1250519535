"""
The status page in a real browser: headless Chromium loads it from a real
gateway while a psycopg client holds a connection open, and the page must
show that client, the pool, the plugin and live rates.

Needs Debian's `chromium` (apt-get install -y chromium).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from tests.integration.api_support import TOKEN, ApiGateway, api_config

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("status_page")]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is required for the status page tests: apt-get install -y chromium")
    return found


def browse(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Chromium, headless, with 3 s of virtual time for the page's polling."""
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
         "--window-size=1280,900", *extra, url],
        capture_output=True, text=True, timeout=120)


class Page:
    def __init__(self, gateway: ApiGateway, client_address: str) -> None:
        self.gateway = gateway
        self.client_address = client_address


@pytest.fixture(scope="module")
def page(service_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    workdir = tmp_path_factory.mktemp("status-page")
    plugins = {"plugins": [{"name": "secret-plugin",
                            "module": "tests.integration.api_runner:SecretPlugin"}]}
    gateway = ApiGateway(api_config(service_pg), plugins, workdir).start()
    try:
        with psycopg.connect(gateway.dsn(), autocommit=True) as client:
            client.execute("select 1")
            with socket.socket(fileno=client.pgconn.socket) as s:
                host, port = s.getsockname()[:2]
                s.detach()
            gateway.wait_for(lambda: gateway.json("/v1/status")["plugins"][0]["health"]
                             == "serving", what="plugin loaded")
            yield Page(gateway, f"{host}:{port}")
    finally:
        gateway.stop()


def dom_text(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:b|span|tbody|div)>', html, re.S)
    assert match is not None, f"#{element_id} not in the DOM"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def test_the_page_shows_the_connected_client_pool_and_plugin(page: Page, tmp_path: Path) -> None:
    result = browse(f"{page.gateway.http}/#token={TOKEN}", tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    html = result.stdout
    assert f'<td class="remote">{page.client_address}</td>' in html
    assert dom_text(html, "health") == "SERVING"
    assert dom_text(html, "clients-total") == "1"
    blocks = dom_text(html, "blocks")
    assert blocks.split()[:3] == ["default/writes", "127.0.0.1:5432", "healthy"]
    size, available, busy, waiting, clients = (int(n) for n in blocks.split()[3:8])
    assert (size, busy, waiting, clients) == (2, 1, 0, 1)
    assert available in (0, 1)  # the pool may be re-dialling its second connection
    plugins = dom_text(html, "plugins")
    assert plugins.startswith("secret-plugin 1.2.3 1000 in-process") and "serving" in plugins
    # Rates need two polls: the placeholder is gone once the page refreshed itself.
    assert re.fullmatch(r"\d+(\.\d)? (B|KiB|MiB|GiB|TiB)/s", dom_text(html, "rate-in"))
    assert dom_text(html, "error") == ""
    assert TOKEN not in html  # the fragment is dropped from the address bar and the page


def test_without_a_token_the_page_asks_for_one(page: Page, tmp_path: Path) -> None:
    result = browse(f"{page.gateway.http}/", tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    html = result.stdout
    assert dom_text(html, "error") == "this gateway needs a token"
    assert '<form id="login" style="display: block;"' in html
    assert page.client_address not in html


def test_screenshot(page: Page, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    result = browse(f"{page.gateway.http}/#token={TOKEN}", tmp_path / "profile",
                    f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 900)
