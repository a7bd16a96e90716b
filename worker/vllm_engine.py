"""The in-process vLLM engine; the only module that imports vllm."""

from __future__ import annotations

import gc
import logging
from typing import Any

from worker.openai_format import response_body, sampling_max_tokens
from worker.types import CHAT_URL, EngineRequest, EngineResult

log = logging.getLogger("headroom.worker.vllm")

# OpenAI body field -> vLLM SamplingParams field (max_tokens is handled apart).
_SAMPLING_FIELDS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "n": "n", "seed": "seed", "stop": "stop",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "repetition_penalty": "repetition_penalty", "min_tokens": "min_tokens", "ignore_eos": "ignore_eos",
}


class VllmEngine:
    """vllm.LLM in this process, driven through its LLMEngine (add, step, abort): continuous batching.

    With sleep mode (CUDA) free = llm.sleep(level); without (CPU) free = shut down.
    """

    kind = "vllm"

    def __init__(self, worker_settings):
        self.settings = worker_settings
        self.model = worker_settings.model
        self.llm = None
        self._sleep_mode: bool | None = None  # known after the first load
        self._sleeping = False
        self._running: dict[str, tuple[EngineRequest, str]] = {}  # vLLM's request id -> (request, internal id)

    @property
    def loaded(self) -> bool:
        return self.llm is not None and not self._sleeping

    @property
    def can_keep(self) -> bool:
        """Requests stay unscheduled while step() is not called only when the engine core runs in this process
        (VLLM_ENABLE_V1_MULTIPROCESSING=0); vLLM's default engine-core process keeps generating on its own."""
        from vllm.v1.engine.core_client import InprocClient

        return self.llm is not None and isinstance(self.llm.llm_engine.engine_core, InprocClient)

    def free_levels(self) -> dict[int, str] | None:
        if self._sleep_mode is None:
            return None
        return {1: "sleep", 2: "sleep"} if self._sleep_mode else {2: "shutdown"}

    def _engine_kwargs(self) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {"model": s.model, "dtype": s.dtype, "seed": s.seed}
        if s.max_model_len:
            kwargs["max_model_len"] = s.max_model_len
        if s.kv_cache_memory:
            kwargs["kv_cache_memory_bytes"] = s.kv_cache_memory
        kwargs.update(s.engine_args)
        return kwargs

    def load(self) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        if self._sleep_mode is None:
            self._sleep_mode = bool(current_platform.is_sleep_mode_available())
        kwargs = self._engine_kwargs()
        if self._sleep_mode:
            kwargs.setdefault("enable_sleep_mode", True)
        log.info("building vLLM engine for %s (sleep mode %s)", self.model, "on" if self._sleep_mode else "unsupported")
        self.llm = LLM(**kwargs)
        self._sleeping = False

    def _params(self, body: dict[str, Any]):
        from vllm import SamplingParams

        fields = {dst: body[src] for src, dst in _SAMPLING_FIELDS.items() if src in body}
        return SamplingParams(max_tokens=sampling_max_tokens(body, self.settings.default_max_tokens), **fields)

    def add(self, requests: list[EngineRequest]) -> list[EngineResult]:
        """Hand each request to vLLM's engine (rendered by vLLM itself); one vLLM refuses fails alone."""
        refused: list[EngineResult] = []
        for request in requests:
            try:
                params = self._params(request.body)
                if request.url == CHAT_URL:
                    (rid,) = self.llm.enqueue_chat([request.body["messages"]], [params], use_tqdm=False)
                else:
                    (rid,) = self.llm.enqueue([request.body["prompt"]], [params], use_tqdm=False)
            except Exception as err:  # vLLM's validation errors (prompt too long, bad parameters)
                body = {"error": {"message": str(err), "type": "invalid_request_error"}}
                refused.append(EngineResult(request.key, 400, body, {"code": "invalid_request", "message": str(err)}))
                continue
            self._running[_external_id(rid)] = (request, rid)
        return refused

    def step(self) -> list[EngineResult]:
        """One engine iteration (LLMEngine.step); the requests that finished in it."""
        engine = self.llm.llm_engine
        if not engine.has_unfinished_requests():
            return []
        results = []
        for output in engine.step():
            entry = self._running.pop(output.request_id, None) if output.finished else None
            if entry is not None:  # None: an output for a request aborted meanwhile
                results.append(self._result(entry[0], output))
        return results

    def abort(self, keys) -> None:
        keys = set(keys)
        gone = [ext for ext, (request, _) in self._running.items() if request.key in keys]
        ids = [self._running.pop(ext)[1] for ext in gone]
        if ids and self.llm is not None:
            self.llm.llm_engine.abort_request(ids, internal=True)

    def in_flight(self) -> int:
        """Unfinished requests as vLLM's engine counts them."""
        llm = self.llm
        return llm.llm_engine.get_num_unfinished_requests() if llm is not None else 0

    def _result(self, request: EngineRequest, output) -> EngineResult:
        choices = [(c.text, c.finish_reason) for c in output.outputs]
        prompt_tokens = len(output.prompt_token_ids or [])
        completion_tokens = sum(len(c.token_ids) for c in output.outputs)
        body = response_body(request.url, self.model, choices, prompt_tokens, completion_tokens)
        return EngineResult(request.key, 200, body, None, prompt_tokens, completion_tokens)

    def free(self, level: int) -> str:
        self._running.clear()  # the controller aborted everything first; nothing in flight survives a free
        if self._sleep_mode:
            self.llm.sleep(level=level)
            self._sleeping = True
            return "sleep"
        self._shutdown()
        return "shutdown"

    def _shutdown(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # already down, or an engine without engine_core
                log.warning("engine_core.shutdown() failed; relying on garbage collection", exc_info=True)
            del llm
        gc.collect()

    def wake(self) -> None:
        if self._sleeping and self.llm is not None:
            self.llm.wake_up()
            self._sleeping = False
        else:
            self.load()

    def close(self) -> None:
        self._shutdown()


def _external_id(internal_id: str) -> str:
    """vLLM's id for a request it reports in outputs: LLM's counter; the engine appends '-<8 random chars>'."""
    return internal_id.split("-", 1)[0]
