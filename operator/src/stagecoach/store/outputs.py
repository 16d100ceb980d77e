"""The stored form of a stage output.

An output is stored as JSON ``{"format": "json" | "text", "value": <output>}``: for
``format: json`` the value is the parsed JSON document, for ``text`` the answer string.
Keeping the format beside the value lets readers (templates, CEL, ``stagecoach trace``)
tell the JSON string ``"42"`` from the text ``42`` without the stage spec. Optional
``stage``/``iteration``/``index``/``attempt`` fields say where it came from. No side effects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["StoredOutput", "decode_output", "encode_output"]

Format = Literal["json", "text"]


@dataclass(frozen=True)
class StoredOutput:
    """An output and its format."""

    value: Any
    format: Format = "json"


def encode_output(value: Any, format: Format, **origin: Any) -> bytes:
    """Serialize an output; ``origin`` (stage, iteration, attempt, index) is kept beside it."""
    if format == "text" and not isinstance(value, str):
        raise TypeError("a text output must be a string")
    doc = {"format": format, "value": value, **{k: v for k, v in origin.items() if v is not None}}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def decode_output(data: bytes) -> StoredOutput:
    """Parse :func:`encode_output` bytes (raises ValueError on anything else)."""
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as e:
        raise ValueError(f"stored output is not JSON: {e}") from None
    if not isinstance(doc, dict) or "value" not in doc or doc.get("format") not in ("json", "text"):
        raise ValueError("stored output needs the keys format (json|text) and value")
    return StoredOutput(value=doc["value"], format=doc["format"])
