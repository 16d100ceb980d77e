"""One JSON POST to a provider, with transport failures mapped to exchange errors.

Shared by the OpenAI-compatible and Anthropic providers. Headers (which carry the API
key) never appear in an error or its message.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx2 as httpx

from .base import ConnectFailed, ProviderHTTPError, RequestTimedOut

__all__ = ["parse_retry_after", "post_json"]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str],
    timeout: float,
) -> dict[str, Any]:
    """POST ``body``; the parsed JSON object of a 2xx answer, else an exchange error."""
    try:
        response = await client.post(url, json=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException as e:
        raise RequestTimedOut(f"no answer from {url} within {timeout:g}s") from e
    except httpx.TransportError as e:
        raise ConnectFailed(f"{url}: {type(e).__name__}: {e}") from e
    if response.status_code >= 400:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise ProviderHTTPError(response.status_code, response.text[:500], retry_after)
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConnectFailed(f"{url}: the answer is not JSON: {response.text[:200]!r}") from e
    if not isinstance(data, dict):
        raise ConnectFailed(f"{url}: the answer is not a JSON object")
    return data
