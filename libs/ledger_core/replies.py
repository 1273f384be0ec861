"""Replies on ``ledger.replies``: the outcomes of one batch for one waiting process, in one message.

A writer answers every command of a batch that waits on the same reply partition with a single
Kafka message (a JSON list of ``[command_id, status, body]``), so a reply costs one record per
batch and edge, not one per command. Bodies are the exact bytes to answer with.
"""

from __future__ import annotations

import orjson

Reply = tuple[str, int, bytes]  # command_id, HTTP status, body bytes


def encode_replies(replies: list[Reply]) -> bytes:
    return orjson.dumps([[cid, status, body.decode()] for cid, status, body in replies])


def decode_replies(raw: bytes) -> list[Reply]:
    return [(cid, int(status), body.encode()) for cid, status, body in orjson.loads(raw)]
