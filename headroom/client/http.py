"""The guard's lease API over HTTP, shared by `headroom check`, `headroom run`, lease() and the pytest plugin."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from headroom.auth import bearer_headers
from headroom.config import Settings
from headroom.detail import describe_detail
from headroom.discover import token_source
from headroom.settings_base import base_url


POLL_SECONDS = 2.0  # how often a queued client hears back (progress line)


class GuardUnreachable(Exception):
    """The guard did not answer (not running, wrong address, timeout)."""


class GuardRejected(Exception):
    """The guard refused the request itself (bad field, bad token): asking again will not help."""


@dataclass
class Answer:
    """The guard's answer to a lease request: granted, waiting (queued), refused, or stale (signals not fresh)."""

    status: str
    lease: dict = field(default_factory=dict)
    reason: str = ""
    shortfall: dict = field(default_factory=dict)
    position: int = 0
    retry_after_seconds: float = 5.0
    needs_free: bool = False  # a dry run: it fits once the guard frees the worker

    @property
    def lease_id(self) -> str | None:
        return self.lease.get("id")


def guard_base_url(settings: Settings, url: str | None = None) -> str:
    """`url`, else [run] guard_url, else the URL of [guard] listen."""
    return base_url(settings.guard.listen, url or settings.run.guard_url or None)


class GuardClient:
    def __init__(self, base_url: str, token: str | None, transport: httpx.BaseTransport | None = None,
                 timeout: float = 10.0, tried: str = "", token_from: str = "the caller"):
        self.base_url = base_url
        self.tried = tried  # where the URL came from, named in "cannot reach" messages
        self.token_from = token_from  # where the token came from (or where none was found), named on a 401
        self.http = httpx.Client(base_url=base_url, headers=bearer_headers(token), timeout=timeout, transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None, found: str = "") -> GuardClient:
        """A client for the guard `settings` name; `found` says how the config was found (headroom.discover)."""
        token, token_from = token_source(settings.state_dir, settings.guard.token or None)
        key = "--url" if url else "[run] guard_url" if settings.run.guard_url else "[guard] listen"
        return cls(guard_base_url(settings, url), token, tried=f"{key} from {found or 'the given configuration'}",
                   token_from=token_from)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, long_poll: float = 0.0, **kwargs) -> httpx.Response:
        try:
            timeout = httpx.Timeout(10.0, read=10.0 + long_poll)
            return self.http.request(method, path, timeout=timeout, **kwargs)
        except httpx.HTTPError as err:
            raise GuardUnreachable(f"cannot reach the guard at {self.base_url} ({self.tried}): {err}") from None

    def _answer(self, response: httpx.Response) -> Answer:
        if response.status_code in (401, 403):
            raise GuardRejected(f"the guard refused the token ({response.status_code}; token from {self.token_from}): "
                                f"{describe_detail(response)}")
        if response.status_code in (400, 404, 410, 422):
            raise GuardRejected(f"the guard rejected the request: {describe_detail(response)}")
        body: dict[str, Any] = response.json()
        if response.status_code == 503:
            body["status"] = "stale"
        elif response.status_code >= 400 and response.status_code != 409:
            raise RuntimeError(f"guard answered {response.status_code}: {body}")
        return Answer(
            status=body.get("status", "refused"),
            lease=body.get("lease") or {},
            reason=body.get("reason") or (body.get("lease") or {}).get("reason", ""),
            shortfall=body.get("shortfall") or {},
            position=body.get("position", 0),
            retry_after_seconds=float(body.get("retry_after_seconds") or response.headers.get("Retry-After") or 5),
            needs_free=bool(body.get("needs_free")),
        )

    def request(self, body: dict, wait_seconds: float = 0, poll_seconds: float = POLL_SECONDS) -> Answer:
        """Ask for a lease; while queued the guard answers within `poll_seconds` so the caller can show progress."""
        payload = {**body, "wait_seconds": int(wait_seconds), "poll_seconds": poll_seconds}
        return self._answer(self._call("POST", "/v1/leases", long_poll=poll_seconds, json=payload))

    def gpus(self) -> list[dict]:
        """The GPUs the guard sees (GET /v1/headroom): empty on a GPU-less box."""
        response = self._call("GET", "/v1/headroom")
        if response.status_code != 200:
            raise GuardRejected(f"the guard answered {response.status_code} for /v1/headroom: "
                                f"{describe_detail(response)}")
        return response.json().get("gpus") or []

    def check(self, body: dict) -> Answer:
        """Would the guard grant `body` now? Nothing is reserved."""
        return self._answer(self._call("POST", "/v1/leases", json={**body, "dry_run": True}))

    def poll(self, lease_id: str, wait_seconds: float) -> Answer:
        return self._answer(
            self._call("GET", f"/v1/leases/{lease_id}", long_poll=wait_seconds, params={"wait": wait_seconds})
        )

    def heartbeat(self, lease_id: str, pid: int | None = None) -> Answer:
        return self._answer(self._call("POST", f"/v1/leases/{lease_id}/heartbeat", json={"pid": pid} if pid else None))

    def release(self, lease_id: str) -> None:
        response = self._call("DELETE", f"/v1/leases/{lease_id}")
        if response.status_code not in (200, 404):
            raise RuntimeError(f"guard answered {response.status_code} releasing {lease_id}: {response.text}")
