"""Database values as JSON: what the client in the sandbox turns back into a DataFrame."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any


def json_safe(value: Any) -> Any:
    """A value json.dumps takes: numbers stay numbers (a Decimal becomes a float; infinities and NaN
    stay, written as Python's json writes them),
    dates and times ISO strings, bytes hex, anything else its text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value  # Infinity, -Infinity and NaN are written as such (the client's json reads them)
    if isinstance(value, decimal.Decimal):
        return float(value)  # numeric's Infinity and NaN too
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def encode_line(message: dict[str, Any]) -> bytes:
    """One message of the protocol: a JSON object on one line."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
