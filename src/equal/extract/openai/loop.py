"""A private asyncio loop in a daemon thread, driven from synchronous code.

:meth:`LoopThread.run` sends a coroutine to the loop and waits for it; when the waiting thread is
interrupted (Ctrl-C) the coroutine is cancelled too, so no request outlives the call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Coroutine


class LoopThread:
    """One event loop, started on first use in a daemon thread named ``name``."""

    def __init__(self, name: str = "equal-llm") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure(self) -> asyncio.AbstractEventLoop:
        """The loop, started now if it is not running yet."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name=self.name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the loop and return its result (or raise its error)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.ensure())
        try:
            return fut.result()
        except BaseException:
            if not fut.done():  # interrupted here (Ctrl-C): stop the coroutine's work too
                fut.cancel()
                concurrent.futures.wait([fut], timeout=30)
            raise

    def close(self, cleanup: Callable[[], Coroutine[Any, Any, Any]] | None = None) -> None:
        """Run ``cleanup()`` on the loop (best effort), then stop the loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            if cleanup is not None:
                try:
                    asyncio.run_coroutine_threadsafe(cleanup(), loop).result(timeout=10)
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()
        self._loop = self._thread = None
