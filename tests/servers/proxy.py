"""A recording reverse proxy for an OpenAI-protocol server (e.g. the real llama.cpp server).

It forwards every request unchanged and keeps, for each, the status and the
``usage`` field of the response, so a test can compare the extractor's
accounting with what the server really answered.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class Exchange:
    path: str
    status: int
    request: dict[str, Any]
    usage: dict[str, Any] | None


class RecordingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # ".../v1"
        self.port = 0
        self._lock = threading.Lock()
        self._log: list[Exchange] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._log)

    def usage_totals(self) -> tuple[int, int]:
        ok = [e.usage for e in self.exchanges if e.status == 200 and e.usage]
        return sum(int(u.get("prompt_tokens", 0)) for u in ok), sum(int(u.get("completion_tokens", 0)) for u in ok)

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        raw = await request.read()
        path = request.match_info["tail"]
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        async with self._session.request(request.method, f"{self.upstream}/{path}", data=raw,
                                         headers=headers) as r:
            body = await r.read()
            status = r.status
            ctype = r.headers.get("Content-Type", "application/json")
        try:
            req = json.loads(raw) if raw else {}
        except ValueError:
            req = {}
        try:
            usage = json.loads(body).get("usage") if status == 200 else None
        except (ValueError, AttributeError):
            usage = None
        with self._lock:
            self._log.append(Exchange(path, status, req, usage))
        return web.Response(body=body, status=status, content_type=ctype.split(";")[0])

    def start(self) -> "RecordingProxy":
        ready = threading.Event()

        async def setup() -> None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/v1/{tail:.*}", self._forward)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = self._runner.addresses[0][1]

        async def cleanup() -> None:
            if self._session is not None:
                await self._session.close()
            if self._runner is not None:
                await self._runner.cleanup()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            loop.run_until_complete(setup())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="recording-proxy", daemon=True)
        self._thread.start()
        ready.wait(30)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
        self._loop = self._thread = None

    def __enter__(self) -> "RecordingProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
