"""The web UI's session and CSRF tokens (actions.py checks them, pages.py puts them in forms).

The session cookie is a token of the cluster secret itself (`ember ui-token`), so it expires
with it; a CSRF token is an HMAC of the secret (of a key of this process without one) and the
session.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import TYPE_CHECKING

from toolkit.runtime.wire import rest_token_error

if TYPE_CHECKING:
    from aiohttp import web

    from toolkit.runtime.endpoint import Endpoint


COOKIE = "ember_session"
_PROCESS_KEY = secrets.token_bytes(32)
"""Keys CSRF tokens when the cluster has no secret (good while this process runs)."""


def own_host(header: str, configured: str | None) -> bool:
    """Whether a Host header names this host: an address, ``localhost`` or the host it was
    configured with. Any other name may be another site's, rebound to this address (DNS
    rebinding); without a secret, nothing else tells such a request apart."""
    if header.startswith("["):
        name = header[1:].partition("]")[0]
    else:
        name = header.rpartition(":")[0] if header.count(":") == 1 else header
    try:
        ipaddress.ip_address(name)
    except ValueError:
        name = name.rstrip(".").casefold()  # names are the same whatever their case
        return name == "localhost" or name == (configured or "").rstrip(".").casefold()
    return True


def allowed_to_read(endpoint: Endpoint, request: web.Request) -> bool:
    """Logged in (the cookie), or a program's token of the secret (`Authorization: Bearer`;
    `fab status` sends one)."""
    if session(endpoint, request) is not None:
        return True
    secrets = endpoint.keys.secrets
    bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(bearer) and bool(secrets) and rest_token_error(secrets, bearer) is None


def session(master: Endpoint, request: web.Request) -> str | None:
    """The request's valid session token, "" for a cluster without a secret, None if none."""
    if master.keys.secret is None:
        return ""
    token = request.cookies.get(COOKIE)
    if token and rest_token_error(master.keys.secrets, token) is None:
        return token
    return None


def csrf(master: Endpoint, request: web.Request) -> str:
    key = master.keys.secret or _PROCESS_KEY
    return hmac.new(key, b"ember-csrf|" + request.cookies.get(COOKIE, "").encode(),
                    hashlib.sha256).hexdigest()
