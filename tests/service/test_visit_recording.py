"""A visit's recording in many pieces: `PUT /v1/visits/{id}/recording` with a 5 MB body that
reaches the app as many ASGI messages (the TestClient joins a body into one, so the upload
goes through httpx's ASGI transport, which hands each chunk on as it comes), stored under its
SHA-256 with its byte count, and the file in the store holding exactly those bytes."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from shared.clock import ManualClock
from shared.roles import Role
from tests.service.test_visit_routes import AUDIO, START, Feed, _ready, check_in, register

from services.visit.application import Visits
from services.visit.recordings import RecordingStore

Headers = Callable[..., dict[str, str]]
CHUNK = 256 * 1024
SIZE = 5 * 1024 * 1024 + 12_345  # twenty chunks and a short one


class Pieces:
    """The app, counting the body messages of each request it is handed."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.messages: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request" and message.get("body"):
                self.messages.append(len(message["body"]))
            return message

        await self.app(scope, counted, send)


def piece(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(4, "big")).digest() * (CHUNK // 32)


async def pieces(sent: list[bytes]) -> AsyncIterator[bytes]:
    size, n = 0, 0
    while size < SIZE:
        chunk = piece(n)[:SIZE - size]
        sent.append(chunk)
        size += len(chunk)
        n += 1
        yield chunk


@pytest.fixture
def app(build: Callable[[str], FastAPI]) -> FastAPI:
    return build("visit")


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def test_a_recording_in_many_chunks_is_stored_whole_under_its_sha256(
        app: FastAPI, client: TestClient, token: Headers, clock: ManualClock) -> None:
    visits: Visits = app.state.service
    store: RecordingStore = app.state.recordings
    assert client.post("/v1/agencies", headers=token(Role.OPS, "ops-1"), json={
        "agency_id": "AG-1", "name": "North Field Services", "licence_number": "LIC-9",
        "authorised_lenders": ["lender-1"], "reviewed_at": "2026-03-01",
        "next_review_due": "2027-03-01"}).status_code == 201
    for collector_id in ("C-1", "C-2"):
        register(client, token, collector_id)
    visit_id = _ready(client, token, Feed(visits, clock), visits, clock)
    clock.set(START + timedelta(minutes=10))
    assert check_in(client, token, visit_id, clock.now()).status_code == 202

    counting = Pieces(app)
    sent: list[bytes] = []

    async def upload() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=counting),
                                     base_url="http://visit") as field:
            return await field.put(f"/v1/visits/{visit_id}/recording", content=pieces(sent),
                                   headers={**token(Role.COLLECTOR, "C-1"), **AUDIO})

    answer = asyncio.run(upload())
    body = b"".join(sent)
    assert len(body) == SIZE and len(sent) > 1
    assert answer.status_code == 201, answer.text
    sha = hashlib.sha256(body).hexdigest()
    assert answer.json() == {"recording_sha256": sha, "bytes": SIZE}
    assert counting.messages == [len(chunk) for chunk in sent]  # it came in pieces

    path = store.path(sha)
    assert path.read_bytes() == body
    assert store.has(sha, SIZE)
    assert not list(store.folder.glob(".upload-*"))  # no temporary file left beside it
    view = client.get(f"/v1/visits/{visit_id}", headers=token(Role.OPS, "ops-1")).json()
    assert [(r["recording_sha256"], r["bytes"]) for r in view["recordings"]] == [(sha, SIZE)]
