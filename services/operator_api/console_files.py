"""The operator console's static files, served by the operator API at ``/console/``.

The console is a small front end (``console/``: HTML, JavaScript modules, CSS; no build step)
that signs every ``/v1/`` call in the browser with the operator's own key, exactly as any other
client does. Its files are public: they hold no secret and need no signature, and the
authentication middleware guards ``/v1/`` only. What protects the key in the page is the
Content-Security-Policy sent with every file: scripts and connections from this origin only, no
inline script, no framing (see ``docs/console.md``).

Only the files listed in :data:`CONSOLE_FILES` are served, read once at start-up: no path from a
request ever reaches the file system.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from wallet_platform.http import json_error

CONSOLE_DIR: Final = Path(__file__).with_name("console")
CONSOLE_PREFIX: Final = "/console/"

CONSOLE_FILES: Final[Mapping[str, str]] = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "api.js": "text/javascript",
    "signing.js": "text/javascript",
    "pages.js": "text/javascript",
    "dom.js": "text/javascript",
    "style.css": "text/css",
}
"""Every file the console has, with its media type."""

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'self'",
        # No 'unsafe-inline' anywhere: a script injected into the page could read the key.
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (the ETag makes that a 304), so a deployment's new console is
    # used at once rather than mixed with cached modules of the old one.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class ConsoleFile:
    """One file of the console, as served."""

    body: bytes
    content_type: str
    etag: str


def load_console(directory: Path = CONSOLE_DIR) -> dict[str, ConsoleFile]:
    """Every file of :data:`CONSOLE_FILES` from ``directory``; a missing one stops start-up
    (a console with a module missing would fail in the operator's browser instead)."""
    files: dict[str, ConsoleFile] = {}
    for name, content_type in CONSOLE_FILES.items():
        body = (directory / name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[name] = ConsoleFile(body, content_type, etag)
    return files


def console_response(
    files: Mapping[str, ConsoleFile], name: str, if_none_match: str | None
) -> web.Response:
    """The answer for ``/console/<name>`` (``""`` is the index): the file with the security
    headers, a 304 when the caller's copy is current, or 404 ``route_not_found``."""
    found = files.get(name or "index.html")
    if found is None:
        return json_error("route_not_found")
    headers = dict(SECURITY_HEADERS) | {"ETag": found.etag}
    if if_none_match is not None and found.etag in (t.strip() for t in if_none_match.split(",")):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=found.body, content_type=found.content_type, charset="utf-8", headers=headers
    )


def add_console_routes(app: web.Application) -> None:
    """Serve the console at ``/console/`` (and redirect ``/console`` there)."""
    files = load_console()

    async def console_file(request: web.Request) -> web.Response:
        return console_response(
            files, request.match_info.get("name", ""), request.headers.get("If-None-Match")
        )

    async def to_console(request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(CONSOLE_PREFIX)

    app.router.add_get("/console", to_console)
    app.router.add_get(CONSOLE_PREFIX, console_file)
    app.router.add_get(CONSOLE_PREFIX + "{name}", console_file)
