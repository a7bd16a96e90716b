"""The API token shared by guard, worker and the command line: generated once in the state dir (0600)."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from headroom.paths import ensure_private_dir

TOKEN_FILE = "token"
TOKEN_ENV = "HEADROOM_TOKEN"


def load_or_create_token(state_dir: Path, configured: str | None = None) -> str:
    """The configured token, else $HEADROOM_TOKEN, else the state dir's token file (created 0600 on first use)."""
    if configured:
        return configured
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = Path(state_dir) / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    ensure_private_dir(Path(state_dir))
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def read_token(state_dir: Path) -> str | None:
    """For clients: $HEADROOM_TOKEN or the state dir's token file, None when neither exists."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    try:
        return (Path(state_dir) / TOKEN_FILE).read_text().strip()
    except (FileNotFoundError, PermissionError):
        return None


def token_matches(expected: str, authorization: str | None) -> bool:
    """Constant-time check of an `Authorization: Bearer ...` header."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization[len("Bearer "):].strip().encode(), expected.encode())


def bearer_dependency(expected: str):
    """A FastAPI dependency that answers 401 (with WWW-Authenticate) unless the bearer token matches."""
    from fastapi import Header, HTTPException

    def check(authorization: str | None = Header(default=None)) -> None:
        if not token_matches(expected, authorization):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token (Authorization: Bearer <token>; the token is in the state dir's 'token' file)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
