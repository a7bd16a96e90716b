"""The remote engine: an OpenAI-compatible server (e.g. vLLM's) over httpx; in-flight calls cancellable; frees via
/sleep."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Iterable

import httpx

from worker.types import EngineRequest, EngineResult

log = logging.getLogger("headroom.worker.remote")


class RemoteEngine:
    """Requests go to `base_url`; free = POST /sleep?level=N, wake = POST /wake_up (needs VLLM_SERVER_DEV_MODE=1).

    Requests in flight are HTTP calls on an asyncio loop in a helper thread; abort() cancels them (the server sees
    the connection close and drops the request). Control endpoints go through a plain client on the controller's thread.
    """

    kind = "remote"
    can_keep = False  # the server keeps generating what it was sent

    def __init__(
        self,
        base_url: str,
        model: str | None,
        timeout_seconds: float,
        default_max_tokens: int,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        tick_seconds: float = 0.02,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model or ""
        self.default_max_tokens = default_max_tokens
        self.timeout_seconds, self.tick_seconds = timeout_seconds, tick_seconds
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_seconds, transport=transport)
        self._async_transport = async_transport
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._running: dict[int, Future] = {}  # store key -> the HTTP call's future
        self._ready = False
        self._sleeping = False
        self._levels: dict[int, str] | None = None

    @property
    def loaded(self) -> bool:
        return self._ready and not self._sleeping

    def free_levels(self) -> dict[int, str] | None:
        return self._levels

    def load(self) -> None:
        """Check the server answers, learn its model name and whether it has the dev-mode sleep endpoints."""
        if not self.model:
            models = self._client.get("/v1/models")
            models.raise_for_status()
            self.model = models.json()["data"][0]["id"]
        probe = self._client.get("/is_sleeping")
        self._levels = {1: "remote_sleep", 2: "remote_sleep"} if probe.status_code == 200 else {}
        self._sleeping = probe.status_code == 200 and bool(probe.json().get("is_sleeping"))
        if self._sleeping:
            self.wake()
        self._start_loop()
        self._ready = True
        log.info("remote engine %s serves %s (sleep endpoints: %s)", self.base_url, self.model, bool(self._levels))

    def _start_loop(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="worker-remote-http", daemon=True).start()
        self._loop = loop
        self._aclient = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout_seconds,
            transport=self._async_transport,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    async def _one(self, request: EngineRequest) -> EngineResult:
        body = dict(request.body)
        body["model"] = self.model
        body.setdefault("max_tokens", body.pop("max_completion_tokens", self.default_max_tokens))
        try:
            response = await self._aclient.post(request.url, json=body)
        except httpx.HTTPError as err:
            return EngineResult(
                request.key, 0, None, {"code": "remote_unreachable", "message": f"{type(err).__name__}: {err}"}
            )
        return _result(request.key, response)

    def add(self, requests: list[EngineRequest]) -> list[EngineResult]:
        for request in requests:
            self._running[request.key] = asyncio.run_coroutine_threadsafe(self._one(request), self._loop)
        return []

    def step(self) -> list[EngineResult]:
        """Wait up to tick_seconds for calls to finish; their results."""
        if not self._running:
            return []
        wait(list(self._running.values()), timeout=self.tick_seconds, return_when=FIRST_COMPLETED)
        done = [key for key, future in self._running.items() if future.done()]
        return [self._running.pop(key).result() for key in done]

    def abort(self, keys: Iterable[int]) -> None:
        """Cancel the HTTP calls: the connection closes and vLLM's server aborts the request."""
        for key in keys:
            future = self._running.pop(key, None)
            if future is not None:
                future.cancel()

    def in_flight(self) -> int:
        return len(self._running)

    def free(self, level: int) -> str:
        self._client.post("/sleep", params={"level": level}).raise_for_status()
        self._sleeping = True
        return "remote_sleep"

    def wake(self) -> None:
        if not self._ready and not self._sleeping:
            self.load()
            return
        self._client.post("/wake_up").raise_for_status()
        self._sleeping = False

    def close(self) -> None:
        self.abort(list(self._running))
        self._client.close()
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._aclient.aclose(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)


def _result(key: int, response: httpx.Response) -> EngineResult:
    try:
        payload = response.json()
    except ValueError:
        payload = {"error": {"message": response.text[:500]}}
    if response.status_code != 200:
        message = str(payload.get("error", payload))[:500] if isinstance(payload, dict) else str(payload)[:500]
        return EngineResult(
            key, response.status_code, payload, {"code": f"http_{response.status_code}", "message": message}
        )
    usage = payload.get("usage") or {}
    return EngineResult(key, 200, payload, None, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
