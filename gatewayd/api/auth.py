# -*- test-case-name: tests.unit.test_api_http -*-
"""
The admin API's optional bearer token (ours: GatewayD's API has no auth).

The token comes from C{api.token}, else the file named by C{api.tokenFile},
else C{GATEWAYD_API_TOKEN} (which the config loader also maps onto
C{api.token}; reading it here covers configs built without the loader).
Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from typing import Mapping

from gatewayd.config.schema import API
from gatewayd.errors import ConfigError

ENV_TOKEN = "GATEWAYD_API_TOKEN"


class TokenCheck:
    """
    Checks C{Authorization: Bearer <token>} values.

    @ivar required: False when no token is configured (everything passes).
    """

    def __init__(self, token: str | None) -> None:
        self._token = token.encode("utf-8") if token else None

    @property
    def required(self) -> bool:
        return self._token is not None

    def accepts(self, authorization: str | bytes | None) -> bool:
        """Whether an C{Authorization} header value carries the token."""
        if self._token is None:
            return True
        if not authorization:
            return False
        if isinstance(authorization, str):
            authorization = authorization.encode("utf-8", "replace")
        scheme, _, credentials = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(), self._token)


def resolve_token(config: API, *, environ: Mapping[str, str] | None = None,
                  config_path: str | None = None) -> tuple[str | None, str]:
    """
    The configured token and where it came from (for the log: never the token).

    @raise ConfigError: C{tokenFile} is unreadable or empty.
    """
    if config.token:
        return config.token, "api.token"
    if config.token_file:
        try:
            with open(config.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise ConfigError(config_path, "api.tokenFile",
                              f"cannot read {config.token_file}: {e.strerror}") from None
        if not token:
            raise ConfigError(config_path, "api.tokenFile", f"{config.token_file} is empty")
        return token, f"api.tokenFile ({config.token_file})"
    env = os.environ if environ is None else environ
    token = env.get(ENV_TOKEN, "").strip()
    if token:
        return token, ENV_TOKEN
    return None, ""


def token_file_exposed(path: str) -> bool:
    """Whether a token file can be read by group or others."""
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def is_loopback(host: str) -> bool:
    """Whether a listen interface only accepts local connections (C{""} means all)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
