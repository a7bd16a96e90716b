"""The [worker] section of the configuration."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from headroom.settings_base import ListenAddress, Section
from headroom.sizes import parse_size


class WorkerSettings(Section):
    enabled: bool = Field(False, description="`headroom up` starts the worker only when enabled.")
    listen: ListenAddress = Field(
        "127.0.0.1:9842", description="Address of the job API, the control endpoint and /metrics."
    )
    token: str | None = Field(
        None,
        description=(
            "Bearer token for PUT/POST/DELETE and result reads (at least 16 characters); unset: $HEADROOM_TOKEN, "
            "else the state dir's 'token' file."
        ),
    )
    engine: Literal["vllm", "remote", "echo"] = Field(
        "vllm",
        description=(
            "Which engine runs requests: vllm (in-process vLLM LLM), remote (an OpenAI-compatible server), echo "
            "(dev/test only)."
        ),
    )
    model: str = Field(
        "",
        description=(
            'Model for the in-process engine: a local directory or a Hugging Face name (required when engine = "vllm").'
        ),
    )
    dtype: str = Field(
        "auto", description="dtype for the in-process engine (vLLM's `dtype`: auto, float32, bfloat16, float16)."
    )
    max_model_len: int | None = Field(
        default=None,
        gt=0,
        description="Longest prompt + completion in tokens for the in-process engine; unset: the model's own limit.",
    )
    kv_cache_memory: int | None = Field(
        None, description="KV cache size for the in-process engine (e.g. 64MiB, 4GiB); unset: vLLM's default."
    )
    seed: int = Field(0, description="Seed for the in-process engine, so temperature-0 output is repeatable.")
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments passed as-is to vllm.LLM (e.g. {gpu_memory_utilization = 0.7}).",
    )
    remote_url: str = Field(
        "http://127.0.0.1:8000",
        description=(
            'Base URL of the remote OpenAI-compatible server (engine = "remote"), e.g. a `vllm serve` in dev mode.'
        ),
    )
    remote_model: str | None = Field(
        None, description="Model name sent to the remote server; unset: the first one its /v1/models lists."
    )
    remote_timeout_seconds: float = Field(
        default=600.0, gt=0, description="Seconds one remote request may take before it counts as failed."
    )
    concurrency: int = Field(
        default=16,
        ge=1,
        le=4096,
        description=(
            "Most requests in flight at once in the running state (continuous batching); throttled(n) lowers it."
        ),
    )
    max_upload_bytes: int = Field(100 * 2**20, description="Largest batch upload accepted; bigger ones get 413.")
    results_need_token: bool = Field(
        True,
        description=(
            "GET /v1/batches/{id}/output and /requests need the token (generated text is private); false opens them."
        ),
    )
    max_requests_per_batch: int = Field(default=50_000, ge=1, description="Most request lines in one batch.")
    default_max_tokens: int = Field(
        default=16, ge=1, description="max_tokens for requests that do not set it (OpenAI's completions default is 16)."
    )
    pause_mode: Literal["abort", "wait", "keep"] = Field(
        "abort",
        description=(
            "What a pause does with requests in flight: abort (abort and requeue them; they restart later), wait "
            "(let them finish, start no new one), keep (hold them in the in-process engine, unscheduled; resume "
            "continues them)."
        ),
    )
    control_wait_seconds: float = Field(
        default=2.0,
        ge=0,
        description=(
            "How long PUT /control/state waits for the controller to begin a transition (200 once reached, else 202)."
        ),
    )
    retry_after_seconds: int = Field(
        default=300,
        ge=0,
        description="Retry-After for 503 answers in maintenance when PUT /control/maintenance gave none.",
    )
    oom_score_adj: int | None = Field(
        default=-500,
        ge=-1000,
        le=1000,
        description=(
            "The kernel's backstop: the worker's oom_score_adj (and its engine processes', inherited), so that if "
            "the kernel must still kill, it takes an unleased newcomer, not production. -500 halves the worker's "
            "badness against a newcomer of the same size but stays above headroom's own -900. Lowering it needs "
            "CAP_SYS_RESOURCE (systemd sets it from the unit's OOMScoreAdjust=); null leaves it as inherited."
        ),
    )
    store_on_corrupt: Literal["move_aside", "refuse"] = Field(
        "move_aside",
        description=(
            'A job database that fails PRAGMA quick_check at start: "move_aside" renames it to '
            "worker.sqlite3.corrupt-<time> (kept, never deleted), logs it, raises a metric and an alert, and "
            'starts with an empty queue; "refuse" exits 5 before serving. move_aside is the default, as for the '
            "guard: under systemd a refusal only restart-loops, while the moved file keeps every batch and result"
            " for recovery (TROUBLESHOOTING.md)."
        ),
    )

    @field_validator("kv_cache_memory", "max_upload_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_size(value)

    @model_validator(mode="after")
    def _keep_needs_in_process(self) -> "WorkerSettings":
        if self.pause_mode == "keep" and self.engine == "remote":
            raise ValueError(
                "worker.pause_mode = 'keep' needs an in-process engine: a remote server keeps generating "
                "what it was sent; use 'abort' or 'wait' with worker.engine = 'remote'"
            )
        return self

    @model_validator(mode="after")
    def _model_needed(self) -> "WorkerSettings":
        if self.enabled and self.engine == "vllm" and not self.model:
            raise ValueError(
                "worker.model must name a model directory or Hugging Face name when worker.engine = 'vllm'"
            )
        return self
