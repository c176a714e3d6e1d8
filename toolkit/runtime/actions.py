"""What the web UI lets an operator do (kill a driver), and its login.

With a cluster secret, an action needs a login first: a token of the secret (`ember ui-token`,
short-lived, or `ember rest-token`), kept in an HttpOnly, SameSite=Strict cookie (Secure over
HTTPS); the cookie is the token itself, so it expires with it. Every form carries a CSRF token
derived from the secret and the session, and a POST from another origin is refused. Without
a secret, there is no login, and the CSRF token and the origin check still apply.
Reading needs no login.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from toolkit.runtime import messages as m
from toolkit.runtime.httpguard import within_body_timeout
from toolkit.runtime.session import COOKIE, csrf, own_host, session
from toolkit.runtime.wire import rest_token_error

if TYPE_CHECKING:
    from toolkit.runtime.endpoint import Endpoint
    from toolkit.runtime.master import Master

def _refusal(master: Endpoint, request: web.Request, form: Any) -> str | None:
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return f"a form from another site ({origin}) is refused"
    if master.keys.secret is None and not own_host(request.host, master.config.host):
        # no login guards the form: a name that is not this host's is a page of another site
        # rebound to this address (DNS rebinding), whose origin then looks like this one
        return f"{request.host!r} is not this host's name: open the UI by its address"
    given = str(form.get("csrf", "")).encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, csrf(master, request).encode()):
        return "the form's CSRF token is missing or wrong: reload the page and try again"
    return None


def _page(status: int, title: str, message: str) -> web.Response:
    from toolkit.runtime.pages import page

    return web.Response(text=page("error.html.j2", title=title, message=message),
                        status=status, content_type="text/html")


def _back(to: str) -> web.Response:
    """303 to a page of this UI (a relative path: never another site)."""
    raise web.HTTPSeeOther(_safe(to))


async def kill_driver(master: Master, request: web.Request) -> web.Response:
    return await _kill(master, request, "driver", lambda i: master.ask(
        m.RequestKillDriver(i), m.KillDriverResponse), "/driver/?id=")


async def kill_app(master: Master, request: web.Request) -> web.Response:
    return await _kill(master, request, "application", lambda i: master.ask(
        m.RequestKillApplication(i), m.KillApplicationResponse), "/app/?appId=")


async def _kill(master: Master, request: web.Request, what: str,
                ask: Callable[[str], Awaitable[Any]], page: str) -> web.Response:
    """A kill form's POST: the form's own, and logged in when the cluster has a secret."""
    form = await within_body_timeout(request.post())
    refused = _refusal(master, request, form)
    if refused:
        return _page(403, "Refused", refused)
    if session(master, request) is None:
        return _page(401, "Log in first", f"This cluster has a secret: log in with a token of "
                     f"`ember ui-token`, then kill the {what} from its page.")
    ident = str(form.get("id", ""))
    answer = await ask(ident)
    if not answer.success:
        return _page(409, "Not killed", answer.message)
    return _back(page + ident)


async def log_in(master: Endpoint, request: web.Request) -> web.Response:
    form = await within_body_timeout(request.post())
    refused = _refusal(master, request, form)
    if refused:
        return _page(403, "Refused", refused)
    if master.keys.secret is None:
        return _back(str(form.get("next", "/")))
    token = str(form.get("token", "")).strip()
    problem = rest_token_error(master.keys.secrets, token)
    if problem is not None:
        return _page(401, "Not logged in", problem)
    expires = int(token.split(".")[1])
    response = web.HTTPSeeOther(_safe(str(form.get("next", "/"))))
    response.set_cookie(COOKIE, token, max_age=max(0, expires - int(time.time())),
                        httponly=True, samesite="Strict", path="/",
                        secure=request.scheme == "https")
    raise response


async def log_out(master: Endpoint, request: web.Request) -> web.Response:
    form = await within_body_timeout(request.post())
    refused = _refusal(master, request, form)
    if refused:
        return _page(403, "Refused", refused)
    response = web.HTTPSeeOther("/")
    response.del_cookie(COOKIE, path="/")
    raise response


def _safe(to: str) -> str:
    """``to`` if it is a path of this UI, else "/". Browsers and yarl drop tabs and line
    breaks, and browsers read a backslash as a slash: a slash, a tab and ``/evil`` would
    become ``//evil``, another site. A path with a backslash or any control character is
    refused."""
    if not to.startswith("/") or to.startswith("//") or "\\" in to or any(
            ord(c) < 0x20 or ord(c) == 0x7F for c in to):
        return "/"
    return to
