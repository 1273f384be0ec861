"""The operator console's files as the operator API serves them: only the listed files, each with
the Content-Security-Policy, public (the signature middleware guards ``/v1/`` only), and written
so that policy can hold (no inline script, no markup built from data)."""

from __future__ import annotations

import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from operator_api.auth import operator_auth_middleware
from operator_api.console_files import (
    CONSOLE_DIR,
    CONSOLE_FILES,
    CONTENT_SECURITY_POLICY,
    add_console_routes,
    console_response,
    load_console,
)

pytestmark = pytest.mark.unit

FILES = load_console()


def test_the_index_is_served_with_the_content_security_policy() -> None:
    response = console_response(FILES, "", None)
    assert response.status == 200 and response.content_type == "text/html"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.body == (CONSOLE_DIR / "index.html").read_bytes()


@pytest.mark.parametrize("name", ["../app.py", "app.py", "console_files.py", "%2e%2e", "x.js"])
def test_a_file_not_listed_is_route_not_found(name: str) -> None:
    response = console_response(FILES, name, None)
    assert response.status == 404
    assert isinstance(response.body, bytes) and b'"route_not_found"' in response.body


def test_a_current_copy_is_answered_304_with_the_same_headers() -> None:
    etag = FILES["app.js"].etag
    response = console_response(FILES, "app.js", f'"other", {etag}')
    assert response.status == 304 and response.body is None
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert console_response(FILES, "app.js", '"other"').status == 200


def _referenced(name: str) -> set[str]:
    """The console files that ``name`` loads: modules it imports, scripts and stylesheets."""
    text = (CONSOLE_DIR / name).read_text()
    found = re.findall(r'(?:from|import)\s+"\./([\w.-]+)"', text)
    found += re.findall(r'(?:src|href)="([\w.-]+\.(?:js|css))"', text)
    return set(found)


def test_every_file_the_console_loads_is_listed_and_every_listed_file_exists() -> None:
    reachable, todo = set(), ["index.html"]
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo += _referenced(name)
    assert reachable == set(CONSOLE_FILES)
    assert {p.name for p in CONSOLE_DIR.iterdir()} == set(CONSOLE_FILES)


def test_no_inline_script_style_or_markup_from_data() -> None:
    index = (CONSOLE_DIR / "index.html").read_text()
    # The policy forbids inline script and style: any would be refused by the browser.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", index) == []
    assert re.search(r"\sstyle=|\son[a-z]+=", index) is None
    for name in CONSOLE_FILES:
        if name.endswith(".js"):
            text = (CONSOLE_DIR / name).read_text()
            # Values from the API become text nodes, never markup or code.
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
                assert sink not in text, (name, sink)
            # The secret is kept in sessionStorage only: never localStorage, never logged.
            assert "localStorage" not in text and "console.log" not in text, name


async def _console(request: web.Request) -> web.Response:
    return web.Response(text="console")


async def test_the_signature_middleware_lets_the_console_through_unsigned() -> None:
    # An application without the key store: any request the middleware guarded would fail on it.
    app = web.Application()
    request = make_mocked_request("GET", "/console/", app=app)
    response = await operator_auth_middleware()(request, _console)
    assert response.status == 200
    with pytest.raises(KeyError):
        await operator_auth_middleware()(make_mocked_request("GET", "/v1/x", app=app), _console)


async def test_the_console_without_its_slash_redirects_to_the_index() -> None:
    app = web.Application()
    add_console_routes(app)
    match = await app.router.resolve(make_mocked_request("GET", "/console", app=app))
    with pytest.raises(web.HTTPPermanentRedirect) as redirect:
        await match.handler(make_mocked_request("GET", "/console", app=app))
    assert redirect.value.status == 308 and redirect.value.location == "/console/"
