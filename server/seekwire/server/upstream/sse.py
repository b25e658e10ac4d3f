"""Incremental parser for DeepSeek's server-sent events (reference §5.1).

Only `data:` fields matter; comment lines (`: keep-alive`) and blank lines that
dispatch nothing are skipped. The client treats any bytes as a sign of life, but
only data as progress (upstream/timing.py).
"""

from __future__ import annotations


class SSEParser:
    __slots__ = ("_data", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._data: bytes | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        """Returns the data payloads of the events completed by `chunk`, in order."""
        if self._tail:
            chunk = self._tail + chunk
        lines = chunk.split(b"\n")
        self._tail = lines.pop()
        events: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data is not None:
                    events.append(self._data)
                    self._data = None
            elif line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
                self._data = value if self._data is None else self._data + b"\n" + value
            # Comments (":"), event:, id: and retry: carry nothing DeepSeek uses.
        return events
