"""The engine interface, the echo engine (dev/test only) and the factory that picks one from the settings."""

from __future__ import annotations

import time
from typing import Protocol

from worker.openai_format import response_body
from worker.types import CHAT_URL, EngineRequest, EngineResult


class Engine(Protocol):
    """What the runner needs from an engine. Every call comes from the runner's one thread."""

    kind: str  # "vllm", "remote", "echo"
    model: str  # the model name put in responses

    @property
    def loaded(self) -> bool: ...

    def free_levels(self) -> dict[int, str] | None:
        """Level -> how it frees ("sleep", "shutdown", "remote_sleep"); None while not known (before the first load)."""

    def load(self) -> None:
        """Build the engine (first start, or wake after a shutdown-style free)."""

    def run(self, requests: list[EngineRequest]) -> list[EngineResult]:
        """Run one step; one result per request, a failure of one request never fails the others."""

    def free(self, level: int) -> str:
        """Free memory at `level`; returns the method used."""

    def wake(self) -> None:
        """Undo free(): afterwards the engine serves again."""

    def close(self) -> None: ...


def sampling_max_tokens(body: dict, default: int) -> int:
    return body.get("max_tokens") or body.get("max_completion_tokens") or default


class EchoEngine:
    """A deterministic stand-in FOR TESTS AND DEVELOPMENT ONLY: it 'generates' the prompt's words back.

    It lets the queue and control logic be tested in milliseconds; it is not a model and not a benchmark.
    """

    kind = "echo"

    def __init__(self, step_seconds: float = 0.0, levels: dict[int, str] | None = None, default_max_tokens: int = 16):
        self.model = "echo"
        self.step_seconds = step_seconds  # simulated time per step
        self._levels = levels or {2: "shutdown"}
        self._loaded = False
        self.default_max_tokens = default_max_tokens

    @property
    def loaded(self) -> bool:
        return self._loaded

    def free_levels(self) -> dict[int, str]:
        return dict(self._levels)

    def load(self) -> None:
        self._loaded = True

    def run(self, requests: list[EngineRequest]) -> list[EngineResult]:
        time.sleep(self.step_seconds)
        return [self._one(request) for request in requests]

    def _one(self, request: EngineRequest) -> EngineResult:
        body = request.body
        text = body["messages"][-1]["content"] if request.url == CHAT_URL else body["prompt"]
        if "FAIL" in text:
            return EngineResult(request.key, 400, None, {"code": "invalid_request", "message": "echo engine: FAIL in prompt"})
        words = text.split()
        out = words[: sampling_max_tokens(body, self.default_max_tokens)]
        choices = [(" " + " ".join(out), "length" if len(out) < len(words) else "stop")] * body.get("n", 1)
        result = response_body(request.url, self.model, choices, len(words), len(out) * len(choices))
        return EngineResult(request.key, 200, result, None, len(words), len(out) * len(choices))

    def free(self, level: int) -> str:
        self._loaded = False
        return self._levels[level]

    def wake(self) -> None:
        self._loaded = True

    def close(self) -> None:
        self._loaded = False


def make_engine(settings) -> Engine:
    """The engine named by settings.worker.engine (nothing heavy is imported or loaded here)."""
    ws = settings.worker
    if ws.engine == "echo":
        return EchoEngine(default_max_tokens=ws.default_max_tokens)
    if ws.engine == "remote":
        from worker.remote_engine import RemoteEngine

        return RemoteEngine(ws.remote_url, ws.remote_model, ws.remote_timeout_seconds, ws.default_max_tokens)
    from worker.vllm_engine import VllmEngine

    return VllmEngine(ws)
