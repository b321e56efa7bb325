"""A real HTTP server speaking the OpenAI chat-completions protocol, with injectable faults.

It runs aiohttp on 127.0.0.1 (ephemeral port) in a background thread:

    with OpenAIServer(Faults(latency=0.2)) as server:
        cfg.llm.base_url = server.url
        ...
        server.count(kind="extract")

Answers are grounded in the document in the user message (the text between
``<document>`` and ``</document>``, else the whole message): each pair's answer
is a sentence of the document and its question names the sentence's first
words. A refine request (its message holds ``<pairs>...</pairs>``) is answered
with the pairs it shows, less the last ``Faults.refine_drop``.

Faults (see :class:`Faults`) apply to extraction requests: to the first N
requests overall, to every request after the first N (an endpoint that dies
in the middle of a run), to the first N requests of every document, to every
request of chosen documents, or to all requests. Every request is recorded
(:class:`Seen`) with its arrival time, the document's key (:func:`doc_key`),
its status and its Authorization header.

``python -m servers.openai_server --latency 0.2`` (from ``tests/``) runs it in
the foreground and prints its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODES = ("", "429", "500", "503", "drop", "hang", "invalid_json", "empty", "echo_auth")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_DOC = re.compile(r"<document>\n?(.*?)\n?</document>", re.S)
_PAIRS = re.compile(r"<pairs>\n?(.*?)\n?</pairs>", re.S)
INVALID_JSON = 'Sure! Here are the pairs you asked for: [{"question": "What is the main'


def doc_key(text: str) -> str:
    """The key under which the server records a document (sha256 of the stripped text, 16 hex)."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


def grounded_pairs(text: str, n: int) -> list[dict[str, str]]:
    """Up to ``n`` pairs whose answers are sentences of ``text``."""
    pairs = []
    for sent in _SENTENCE.split(text):
        sent = sent.strip()
        words = _WORD.findall(sent)
        if len(words) < 5 or len(sent) < 25 or len(sent) > 1500:
            continue
        pairs.append({"question": f"What does the text say about {' '.join(words[:5])}?", "answer": sent})
        if len(pairs) >= n:
            break
    return pairs


@dataclass
class Faults:
    """What the server does wrong. Set fields in a test, or replace ``server.faults``."""

    latency: float = 0.0  # seconds before every answer
    ok_latency: float = 0.0  # more seconds before an answer with no fault (a fault is answered without them)
    mode: str = ""  # one of MODES: the fault to inject
    first_n: int = 0  # the first N extraction requests (all documents together) get `mode`
    after_n: int = 0  # every extraction request after the first N (all documents together) gets `mode`; 0: off
    per_doc: int = 0  # the first N extraction requests of every document get `mode`
    docs: set[str] = field(default_factory=set)  # doc_key()s whose every request gets `mode`
    always: bool = False  # every request gets `mode`
    retry_after: str | None = "1"  # Retry-After header sent with 429 and 503
    echo_status: int = 401  # status of "echo_auth" answers (whose body repeats the Authorization header)
    hang_seconds: float = 30.0  # "hang": wait this long, then drop the connection
    pairs_per_doc: int = 3
    style: str = "object"  # object {"pairs": [...]} | list [...] | fenced ```json ...``` | trailing (text after)
    reject_json_schema: int = 0  # answer response_format type json_schema with this status (llama-cpp-python: 500)
    refine_drop: int = 0  # refine answers leave out the last N pairs shown
    model: str = "test-model"


@dataclass
class Seen:
    """One request as the server saw it."""

    t: float  # time.monotonic() at arrival
    kind: str  # extract | refine | models | bad
    doc: str  # doc_key of the document ("" for none)
    status: Any  # HTTP status sent, or "drop" / "hang"
    auth: str  # the Authorization header
    response_format: str  # type of the response_format sent ("" for none)
    max_tokens: int | None = None
    prompt_tokens: int = 0  # usage reported (200 answers only)
    completion_tokens: int = 0


class OpenAIServer:
    def __init__(self, faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.faults = faults or Faults()
        self.host, self.port = host, port
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._n_extract = 0
        self._per_doc: dict[str, int] = {}
        self._inflight = 0
        self.max_inflight = 0  # most chat requests being answered at once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "OpenAIServer":
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="openai-test-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._stopping is not None:
            loop.call_soon_threadsafe(self._stopping.set)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._loop = self._thread = None

    def __enter__(self) -> "OpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------- records
    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def count(self, kind: str | None = None, doc: str | None = None, status: Any = None) -> int:
        return sum(1 for s in self.seen if (kind is None or s.kind == kind) and (doc is None or s.doc == doc)
                   and (status is None or s.status == status))

    def docs_seen(self, kind: str = "extract") -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.seen:
            if s.kind == kind:
                out[s.doc] = out.get(s.doc, 0) + 1
        return out

    def usage(self) -> tuple[int, int]:
        """(prompt_tokens, completion_tokens) summed over the usage fields the server sent."""
        seen = self.seen
        return sum(s.prompt_tokens for s in seen), sum(s.completion_tokens for s in seen)

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()
            self._n_extract = 0
            self._per_doc.clear()
            self.max_inflight = 0

    # ---------------------------------------------------------------- handlers
    async def _models(self, request: web.Request) -> web.Response:
        self._record(Seen(time.monotonic(), "models", "", 200, request.headers.get("Authorization", ""), ""))
        return web.json_response({"object": "list", "data": [{"id": self.faults.model, "object": "model",
                                                              "owned_by": "test"}]})

    def _record(self, s: Seen) -> None:
        with self._lock:
            self._seen.append(s)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._inflight += 1
            self.max_inflight = max(self.max_inflight, self._inflight)
        try:
            return await self._answer(request)
        finally:
            with self._lock:
                self._inflight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        t = time.monotonic()
        f = self.faults
        auth = request.headers.get("Authorization", "")
        try:
            body = await request.json()
            messages = body["messages"]
            user = next(m["content"] for m in reversed(messages) if m.get("role") == "user")
            assert isinstance(user, str)
        except Exception:  # noqa: BLE001
            self._record(Seen(t, "bad", "", 400, auth, ""))
            return web.json_response({"error": {"message": "bad request", "type": "invalid_request_error"}},
                                     status=400)
        rf = (body.get("response_format") or {}).get("type", "")
        max_tokens = body.get("max_tokens")
        pairs_m = _PAIRS.search(user)
        doc_m = _DOC.search(user)
        document = doc_m.group(1) if doc_m else user
        kind = "refine" if pairs_m else "extract"
        key = doc_key(document)
        seen = Seen(t, kind, key, 200, auth, rf, max_tokens)

        mode = ""
        with self._lock:
            if kind == "extract":
                self._n_extract += 1
                self._per_doc[key] = self._per_doc.get(key, 0) + 1
                if (f.always or self._n_extract <= f.first_n or self._per_doc[key] <= f.per_doc
                        or key in f.docs or 0 < f.after_n < self._n_extract):
                    mode = f.mode
            elif f.always:
                mode = f.mode
            self._seen.append(seen)

        if f.latency:
            await asyncio.sleep(f.latency)

        if f.reject_json_schema and rf == "json_schema":
            seen.status = f.reject_json_schema
            msg = ("1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                   "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}")
            return web.json_response({"error": {"message": msg, "type": "internal_server_error"}},
                                     status=f.reject_json_schema)
        if mode in ("429", "503"):
            seen.status = int(mode)
            headers = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
            return web.json_response({"error": {"message": "slow down", "type": "rate_limit"}},
                                     status=int(mode), headers=headers)
        if mode == "500":
            seen.status = 500
            return web.json_response({"error": {"message": "internal error", "type": "server_error"}}, status=500)
        if mode == "echo_auth":
            seen.status = f.echo_status
            return web.json_response({"error": {"message": f"bad credentials: {auth}", "type": "auth_error"}},
                                     status=f.echo_status)
        if mode == "drop":
            seen.status = "drop"
            assert request.transport is not None
            request.transport.close()
            return web.Response(text="")
        if mode == "hang":
            seen.status = "hang"
            assert self._stopping is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), f.hang_seconds)
            except asyncio.TimeoutError:
                pass
            if request.transport is not None:
                request.transport.close()
            return web.Response(text="")

        if f.ok_latency and not mode:
            await asyncio.sleep(f.ok_latency)
        if mode == "invalid_json":
            content = INVALID_JSON
        elif mode == "empty":
            content = ""
        elif kind == "refine":
            try:
                shown = json.loads(pairs_m.group(1))
                shown = shown["pairs"] if isinstance(shown, dict) else shown
            except (ValueError, KeyError, TypeError):
                shown = []
            kept = shown[: max(0, len(shown) - f.refine_drop)]
            content = json.dumps({"pairs": kept}, ensure_ascii=False)
        else:
            pairs = grounded_pairs(document, f.pairs_per_doc)
            if f.style == "list":
                content = json.dumps(pairs, ensure_ascii=False)
            elif f.style == "fenced":
                content = "Here you are:\n```json\n" + json.dumps({"pairs": pairs}, ensure_ascii=False, indent=2) + "\n```\n"
            elif f.style == "trailing":
                content = json.dumps({"pairs": pairs}, ensure_ascii=False) + "\n\nI hope these help! {:)}"
            else:
                content = json.dumps({"pairs": pairs}, ensure_ascii=False)
        finish = "stop"
        if isinstance(max_tokens, int) and len(content) > 4 * max_tokens:
            content, finish = content[: 4 * max_tokens], "length"
        prompt_tokens = max(1, len(user) // 4)
        completion_tokens = max(1, (len(content) + 3) // 4) if content else 0
        seen.prompt_tokens, seen.completion_tokens = prompt_tokens, completion_tokens
        return web.json_response({
            "id": f"chatcmpl-{key}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", f.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args(argv)
    server = OpenAIServer(Faults(latency=args.latency), port=args.port).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
