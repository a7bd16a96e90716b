"""The command line's side of the job API: `headroom batch submit|status|results` over HTTP."""

from __future__ import annotations

import httpx

from headroom.auth import bearer_headers
from headroom.discover import token_source
from headroom.errors import EXIT_NO, EXIT_UNREACHABLE, HeadroomError
from headroom.settings_base import base_url


class WorkerClient:
    def __init__(self, settings, url: str | None = None, timeout: float = 60.0, found: str = ""):
        self.url = base_url(settings.worker.listen, url)
        self.tried = "--url" if url else f"[worker] listen from {found or 'the configuration'}"
        token, self.token_from = token_source(settings.state_dir, settings.worker.token or None)
        self._http = httpx.Client(base_url=self.url, headers=bearer_headers(token), timeout=timeout)

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise HeadroomError(f"the worker at {self.url} ({self.tried}) is not reachable ({err}); is "
                                "`headroom worker` running?", EXIT_UNREACHABLE) from None
        if response.status_code == 401:
            raise HeadroomError(f"{_describe_error(response)} (token from {self.token_from})", EXIT_NO)
        if response.status_code >= 400:
            raise HeadroomError(_describe_error(response), EXIT_NO)
        return response

    def submit(self, data: bytes, priority: str, name: str | None) -> dict:
        params = {"priority": priority} | ({"name": name} if name else {})
        return self._call("POST", "/v1/batches", content=data, params=params,
                          headers={"Content-Type": "application/jsonl"}).json()

    def status(self, batch_id: str) -> dict:
        return self._call("GET", f"/v1/batches/{batch_id}").json()

    def results(self, batch_id: str) -> str:
        return self._call("GET", f"/v1/batches/{batch_id}/output").text

    def cancel(self, batch_id: str) -> dict:
        return self._call("POST", f"/v1/batches/{batch_id}/cancel").json()


def _describe_error(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    detail = payload.get("detail", payload)
    lines = [f"HTTP {response.status_code}: {detail}"]
    for err in payload.get("errors", [])[:20]:
        where = f"line {err['line']}" if err.get("line") else "upload"
        lines.append(f"  {where}" + (f", {err['field']}" if err.get("field") else "") + f": {err['message']}")
    if response.headers.get("Retry-After"):
        lines.append(f"  retry after {response.headers['Retry-After']} s")
    return "\n".join(lines)
