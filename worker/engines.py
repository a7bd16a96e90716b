"""The model engine interface (an engine loop: add, step, abort), the echo engine (dev/test only) and the factory.

The factory imports the real engines lazily; they import nothing from here (no import loop).
"""

from __future__ import annotations

import time
from typing import Iterable, Protocol

from worker.openai_format import response_body, sampling_max_tokens
from worker.types import CHAT_URL, EngineRequest, EngineResult


class ModelEngine(Protocol):
    """What the controller needs from a model engine. Every call comes from the controller's one thread.

    The controller drives a loop: add() requests as room appears, step() once per iteration (each returns
    the requests that finished in it), abort() requests it takes back (they are requeued and restart
    from scratch), in_flight() counts what the engine itself still holds.
    """

    kind: str  # "vllm", "remote", "echo"
    model: str  # the model name put in responses
    can_keep: bool  # requests can stay in the engine without progressing (pause_mode = "keep")

    @property
    def loaded(self) -> bool: ...

    def free_levels(self) -> dict[int, str] | None:
        """Level -> how it frees ("sleep", "shutdown", "remote_sleep"); None while not known (before the first load)."""

    def load(self) -> None:
        """Build the engine (first start, or wake after a shutdown-style free)."""

    def add(self, requests: list[EngineRequest]) -> list[EngineResult]:
        """Start `requests`; returns results for those refused at once (bad parameters), the rest run."""

    def step(self) -> list[EngineResult]:
        """Run one iteration (or wait briefly for progress); the results of requests that finished in it."""

    def abort(self, keys: Iterable[int]) -> None:
        """Stop these requests now; no result comes for them."""

    def in_flight(self) -> int:
        """Requests the engine holds (added, not finished, not aborted), counted by the engine."""

    def free(self, level: int) -> str:
        """Free memory at `level` (nothing is in flight); returns the method used."""

    def wake(self) -> None:
        """Undo free(): afterwards the engine serves again."""

    def close(self) -> None: ...


class EchoEngine:
    """A deterministic stand-in FOR TESTS AND DEVELOPMENT ONLY: it 'generates' the prompt's words back.

    It lets the queue and control logic be tested in milliseconds; it is not a model and not a benchmark.
    Each request takes `request_seconds` from when it was added; a step waits at most `tick_seconds`.
    """

    kind = "echo"
    can_keep = True

    def __init__(self, request_seconds: float = 0.0, levels: dict[int, str] | None = None, default_max_tokens: int = 16,
                 tick_seconds: float = 0.01):
        self.model = "echo"
        self.request_seconds, self.tick_seconds = request_seconds, tick_seconds
        self._levels = levels or {2: "shutdown"}
        self._loaded = False
        self.default_max_tokens = default_max_tokens
        self._running: dict[int, tuple[float, EngineRequest]] = {}  # key -> (due, request)

    @property
    def loaded(self) -> bool:
        return self._loaded

    def free_levels(self) -> dict[int, str]:
        return dict(self._levels)

    def load(self) -> None:
        self._loaded = True

    def add(self, requests: list[EngineRequest]) -> list[EngineResult]:
        due = time.monotonic() + self.request_seconds
        self._running.update((r.key, (due, r)) for r in requests)
        return []

    def step(self) -> list[EngineResult]:
        if self._running:
            wait = min(due for due, _ in self._running.values()) - time.monotonic()
            time.sleep(max(0.0, min(wait, self.tick_seconds)))
        now = time.monotonic()
        done = [key for key, (due, _) in self._running.items() if due <= now]
        return [self._one(self._running.pop(key)[1]) for key in done]

    def abort(self, keys: Iterable[int]) -> None:
        for key in keys:
            self._running.pop(key, None)

    def in_flight(self) -> int:
        return len(self._running)

    def _one(self, request: EngineRequest) -> EngineResult:
        body = request.body
        text = body["messages"][-1]["content"] if request.url == CHAT_URL else body["prompt"]
        if "FAIL" in text:
            return EngineResult(
                request.key, 400, None, {"code": "invalid_request", "message": "echo engine: FAIL in prompt"}
            )
        words = text.split()
        out = words[: sampling_max_tokens(body, self.default_max_tokens)]
        choices = [(" " + " ".join(out), "length" if len(out) < len(words) else "stop")] * body.get("n", 1)
        result = response_body(request.url, self.model, choices, len(words), len(out) * len(choices))
        return EngineResult(request.key, 200, result, None, len(words), len(out) * len(choices))

    def free(self, level: int) -> str:
        self._running.clear()
        self._loaded = False
        return self._levels[level]

    def wake(self) -> None:
        self._loaded = True

    def close(self) -> None:
        self._running.clear()
        self._loaded = False


def make_engine(settings) -> ModelEngine:
    """The engine named by settings.worker.engine (nothing heavy is imported or loaded here)."""
    ws = settings.worker
    if ws.engine == "echo":
        return EchoEngine(default_max_tokens=ws.default_max_tokens)
    if ws.engine == "remote":
        from worker.remote_engine import RemoteEngine

        return RemoteEngine(ws.remote_url, ws.remote_model, ws.remote_timeout_seconds, ws.default_max_tokens)
    from worker.vllm_engine import VllmEngine

    return VllmEngine(ws)
