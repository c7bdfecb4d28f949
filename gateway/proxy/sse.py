"""Incremental Server-Sent Events framing (pure).

Upstream bytes arrive in arbitrary pieces; :class:`SSEParser` yields complete events as
``(raw_bytes, event_name, data)`` so the proxy can forward each event unchanged (no
re-serialisation on the pass-through path) while reading usage out of it.
"""

from __future__ import annotations

from collections.abc import Iterator


class MalformedEvent(ValueError):
    """An upstream event whose data is not a JSON object: the provider's stream is broken."""


class SSEParser:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> Iterator[tuple[bytes, str | None, str]]:
        for raw in self.feed_raw(data):
            event = parse_event(raw)
            if event is not None:
                yield raw, event[0], event[1]

    def feed_raw(self, data: bytes) -> Iterator[bytes]:
        """The complete event blocks in ``data`` (and what came before), unparsed, each
        ending with a blank line; comment-only blocks included."""
        buffer = self._buffer + data
        held = b""
        if buffer.endswith(b"\r"):  # maybe half of a CRLF split across reads
            buffer, held = buffer[:-1], b"\r"
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = 0
        while True:
            index = buffer.find(b"\n\n", start)
            if index < 0:
                break
            yield buffer[start:index + 2]
            start = index + 2
        self._buffer = buffer[start:] + held

    def flush(self) -> Iterator[tuple[bytes, str | None, str]]:
        """A last event the upstream did not terminate with a blank line."""
        raw, self._buffer = self._buffer.replace(b"\r", b"\n"), b""
        if raw.strip():
            event = parse_event(raw)
            if event is not None:
                yield raw + b"\n\n", event[0], event[1]


def parse_event(raw: bytes) -> tuple[str | None, str] | None:
    """``(event name, data)`` of one event block; None for comments / keep-alives only."""
    name: str | None = None
    data: list[str] = []
    for line in raw.decode("utf-8", "replace").split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if not data and name is None:
        return None
    return name, "\n".join(data)
