"""The remote engine: an OpenAI-compatible server (e.g. vLLM's) over httpx; frees through its dev-mode /sleep."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import httpx

from worker.types import EngineRequest, EngineResult

log = logging.getLogger("headroom.worker.remote")


class RemoteEngine:
    """Requests go to `base_url`; free = POST /sleep?level=N, wake = POST /wake_up (needs VLLM_SERVER_DEV_MODE=1)."""

    kind = "remote"

    def __init__(self, base_url: str, model: str | None, timeout_seconds: float, default_max_tokens: int,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.model = model or ""
        self.default_max_tokens = default_max_tokens
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_seconds, transport=transport)
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
        self._ready = True
        log.info("remote engine %s serves %s (sleep endpoints: %s)", self.base_url, self.model, bool(self._levels))

    def _one(self, request: EngineRequest) -> EngineResult:
        body = dict(request.body)
        body["model"] = self.model
        body.setdefault("max_tokens", body.pop("max_completion_tokens", self.default_max_tokens))
        try:
            response = self._client.post(request.url, json=body)
        except httpx.HTTPError as err:
            return EngineResult(request.key, 0, None, {"code": "remote_unreachable", "message": f"{type(err).__name__}: {err}"})
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": {"message": response.text[:500]}}
        if response.status_code != 200:
            message = str(payload.get("error", payload))[:500] if isinstance(payload, dict) else str(payload)[:500]
            return EngineResult(request.key, response.status_code, payload, {"code": f"http_{response.status_code}", "message": message})
        usage = payload.get("usage") or {}
        return EngineResult(request.key, 200, payload, None, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))

    def run(self, requests: list[EngineRequest]) -> list[EngineResult]:
        with ThreadPoolExecutor(max_workers=max(1, len(requests))) as pool:
            return list(pool.map(self._one, requests))

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
        self._client.close()
