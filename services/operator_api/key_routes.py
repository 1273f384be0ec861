"""Key management for admins: ``POST /v1/api-keys``, ``GET /v1/api-keys``,
``GET /v1/api-keys/{apiId}`` and ``PATCH /v1/api-keys/{apiId}``.

The body and answer of the POST are Swapgate's ``generate-api-key`` ones, plus ``settings``;
the secret key is in that one answer and never again. Every change names what it changed in its
audit record (:data:`operator_api.auth.AUDIT_DETAIL`), never a secret.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from ledger_core.requests import RequestError
from operator_api.api_keys import KEY_ROUTES, parse_key_changes, parse_new_key
from operator_api.auth import API_KEY, AUDIT_DETAIL, KEY_POOL
from operator_api.key_store import change_key, changed_fields, create_key, key_by_id, list_keys
from operator_api.master_keys import MasterKeys
from wallet_platform.http import json_error

MASTER_KEYS = web.AppKey("master_keys", MasterKeys)


def _api_id(request: web.Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.match_info["api_id"])
    except ValueError:
        return None


async def create(request: web.Request) -> web.Response:
    """Make a key; 201 with its secret key (shown once)."""
    try:
        new = parse_new_key(await request.read())
    except RequestError as exc:
        return json_error(exc.code, exc.message)
    async with request.app[KEY_POOL].acquire() as conn:
        key, secret_key = await create_key(
            conn, new, request.app[MASTER_KEYS], str(request[API_KEY].api_id)
        )
    view = key.view()
    request[AUDIT_DETAIL] = {"created": {k: v for k, v in view.items() if k != "createdBy"}}
    return web.json_response({**view, "secretKey": secret_key}, status=201)


async def list_all(request: web.Request) -> web.Response:
    """Every key, without secrets."""
    keys = await list_keys(request.app[KEY_POOL])
    return web.json_response([key.view() for key in keys])


async def get_one(request: web.Request) -> web.Response:
    """One key, without its secret."""
    api_id = _api_id(request)
    key = None if api_id is None else await key_by_id(request.app[KEY_POOL], api_id)
    if key is None:
        return json_error("api_key_not_found")
    return web.json_response(key.view())


async def change(request: web.Request) -> web.Response:
    """Change a key's name, activity, whitelist or settings; 200 with the key as it is now."""
    api_id = _api_id(request)
    if api_id is None:
        return json_error("api_key_not_found")
    try:
        changes = parse_key_changes(await request.read())
    except RequestError as exc:
        return json_error(exc.code, exc.message)
    async with request.app[KEY_POOL].acquire() as conn:
        changed = await change_key(conn, api_id, changes)
    if changed is None:
        return json_error("api_key_not_found")
    before, after = changed
    request[AUDIT_DETAIL] = {"apiId": str(api_id), "changed": changed_fields(before, after)}
    return web.json_response(after.view())


def add_key_routes(app: web.Application, master: MasterKeys) -> None:
    """The key-management routes (admin only: :func:`operator_api.api_keys.role_allows`)."""
    app[MASTER_KEYS] = master
    app.router.add_post(KEY_ROUTES, create)
    app.router.add_get(KEY_ROUTES, list_all)
    app.router.add_get(KEY_ROUTES + "/{api_id}", get_one)
    app.router.add_patch(KEY_ROUTES + "/{api_id}", change)
