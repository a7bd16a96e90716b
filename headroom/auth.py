"""The API token shared by guard, worker and the command line: created once, atomically, in the state dir (0600)."""

import hmac
import os
import secrets
from pathlib import Path

from headroom.errors import EXIT_TOKEN, HeadroomError
from headroom.paths import ensure_private_dir

TOKEN_FILE = "token"
TOKEN_ENV = "HEADROOM_TOKEN"
MIN_TOKEN_CHARS = 16  # a generated token has 43; anything shorter is a placeholder or a truncated file
BEARER = b"Bearer "


def check_token(token: str, source: str) -> str:
    """`token` when a server may use it; HeadroomError(EXIT_TOKEN) naming `source` when empty, short or unsendable."""
    fix = "set a token of at least 16 printable characters, or delete the file so a new one is generated"
    if not token:
        raise HeadroomError(f"the API token from {source} is empty: that would let anyone in; {fix}", EXIT_TOKEN)
    if len(token) < MIN_TOKEN_CHARS:
        raise HeadroomError(
            f"the API token from {source} has {len(token)} characters, fewer than {MIN_TOKEN_CHARS}; {fix}", EXIT_TOKEN
        )
    if not all("!" <= ch <= "~" for ch in token):
        raise HeadroomError(
            f"the API token from {source} holds spaces or non-ASCII characters, which an "
            f"Authorization header cannot carry exactly; {fix}",
            EXIT_TOKEN,
        )
    return token


def _create_token_file(path: Path) -> None:
    """Write a fresh token to a temp file (0600, fsync) and link it into place; a racing creator's file wins."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)  # unlike rename, never replaces a token another process already handed out
        except FileExistsError:
            return
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        temp.unlink(missing_ok=True)


def load_or_create_token(state_dir: Path, configured: str | None = None) -> str:
    """For servers: the configured token, else $HEADROOM_TOKEN, else the state dir's token file (created on first use).

    Raises HeadroomError(EXIT_TOKEN) when the token it finds is unusable (empty, short, unreadable): never start open.
    """
    if configured:
        return check_token(configured, "the configuration's token setting")
    if os.environ.get(TOKEN_ENV):  # set but empty counts as unset, as for clients
        return check_token(os.environ[TOKEN_ENV], f"${TOKEN_ENV}")
    path = Path(state_dir) / TOKEN_FILE
    try:
        if not path.exists():
            ensure_private_dir(Path(state_dir))
            _create_token_file(path)
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as err:
        raise HeadroomError(
            f"cannot create or read the API token file {path}: {err.strerror or err}", EXIT_TOKEN
        ) from None
    return check_token(text.strip(), f"the token file {path}")


def read_token(state_dir: Path) -> str | None:
    """For clients: $HEADROOM_TOKEN or the state dir's token file, None when neither exists."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    try:
        return (Path(state_dir) / TOKEN_FILE).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def bearer_headers(token: str | None) -> dict[str, str]:
    """The request headers a client sends: `Authorization: Bearer <token>`, or none without a token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def token_matches(expected: str, authorization: bytes | str | None) -> bool:
    """Constant-time check of an `Authorization` header: exactly one `Bearer ` and then exactly the token's bytes."""
    if not expected or authorization is None:
        return False
    raw = authorization.encode("latin-1", "replace") if isinstance(authorization, str) else authorization
    if not raw.startswith(BEARER):
        return False
    return hmac.compare_digest(raw[len(BEARER) :], expected.encode())


def bearer_dependency(expected: str):
    """A FastAPI dependency that answers 401 unless the bearer token matches; it also publishes the Bearer scheme.

    The gate (headroom.gate) already refuses these requests before their body is read; this is the second check.
    (This module has no `from __future__ import annotations`: FastAPI must see `Request` itself, not a string.)
    """
    from fastapi import Depends, Request
    from fastapi.security import HTTPBearer

    check_token(expected, "the app's wiring")
    scheme = HTTPBearer(
        auto_error=False, description="the token in the state dir's 'token' file (or [guard]/[worker] token)"
    )

    def check(request: Request, _credentials=Depends(scheme)) -> None:
        if not token_matches(expected, request.headers.get("authorization")):
            raise unauthorized()

    return check


def unauthorized():
    from fastapi import HTTPException

    return HTTPException(status_code=401, detail=UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": "Bearer"})


UNAUTHORIZED_DETAIL = (
    "missing or wrong bearer token (Authorization: Bearer <token>; the token is in the state dir's 'token' file)"
)
