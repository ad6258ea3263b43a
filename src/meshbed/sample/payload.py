"""Deterministic bodies, so a client can check a response byte-for-byte."""

from __future__ import annotations

import hashlib
from functools import lru_cache

PATTERN = b"0123456789abcdef"
MAX_SIZE = 256 * 1024 * 1024
_CACHE_LIMIT = 1024 * 1024


def payload_bytes(n: int) -> bytes:
    """The first n bytes of PATTERN repeated; the client can rebuild it to compare."""
    if n < 0 or n > MAX_SIZE:
        raise ValueError(f"size must be in 0..{MAX_SIZE}, got {n}")
    if n <= _CACHE_LIMIT:
        return _cached(n)[0]
    reps, rest = divmod(n, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


def payload_sha256(n: int) -> str:
    """Hex sha256 of payload_bytes(n); cached because fault tests repeat sizes."""
    if n <= _CACHE_LIMIT:
        return _cached(n)[1]
    return hashlib.sha256(payload_bytes(n)).hexdigest()


@lru_cache(maxsize=64)
def _cached(n: int) -> tuple[bytes, str]:
    reps, rest = divmod(n, len(PATTERN))
    body = PATTERN * reps + PATTERN[:rest]
    return body, hashlib.sha256(body).hexdigest()
