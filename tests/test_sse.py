"""The SSE parser against the byte shapes DeepSeek sends (reference §5.1), split anywhere."""

from __future__ import annotations

from seekwire.server.upstream.sse import SSEParser

STREAM = (
    b": keep-alive\n\n"
    b'data: {"a":1}\n\n'
    b": keep-alive\n\n"
    b'data: {"b":2}\r\n\r\n'
    b"event: ignored\nid: 7\nretry: 10\n"
    b'data:{"c":3}\n\n'
    b"data: first\ndata: second\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a":1}', b'{"b":2}', b'{"c":3}', b"first\nsecond", b"[DONE]"]


def test_whole_stream() -> None:
    parser = SSEParser()
    assert parser.feed(STREAM) == EXPECTED


def test_every_split_point_gives_the_same_events() -> None:
    for cut in range(1, len(STREAM)):
        parser = SSEParser()
        events = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
        assert events == EXPECTED, cut


def test_byte_at_a_time() -> None:
    parser = SSEParser()
    events = [e for i in range(len(STREAM)) for e in parser.feed(STREAM[i : i + 1])]
    assert events == EXPECTED


def test_blank_lines_and_comments_alone_are_no_events() -> None:
    parser = SSEParser()
    assert parser.feed(b"\n\n: keep-alive\n\n\n") == []


def test_an_unterminated_event_is_not_dispatched() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"cut":') == []
    assert parser.feed(b"true}\n") == []
