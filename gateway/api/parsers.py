"""A JSON parser that bounds the body, rejects NaN/Infinity and names what is wrong."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from rest_framework.parsers import BaseParser

from gateway.errors import InvalidJSON, PayloadTooLarge


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: dict[str, Any] | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"Request body too large: the limit is {limit} bytes")
        if not raw.strip():
            raise InvalidJSON("Invalid JSON: the request body is empty")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidJSON(f"Invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidJSON("Invalid JSON: the body must be a JSON object")
        return data
