"""Converse: one long-lived bidirectional stream per conversation, history kept server-side.

Three tasks cooperate per stream: the handler yields events from a bounded
outbox (so a slow reader slows the upstream read instead of growing memory), a
reader takes the caller's messages (acting on cancels at once), and a driver
runs turns one at a time in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import StatusCode

from seekwire.server.caller import Caller
from seekwire.server.convert import from_json
from seekwire.server.errors import GatewayError, as_gateway_error, internal, invalid_argument
from seekwire.server.limits import Admission, current_limits, estimate_tokens
from seekwire.server.state.sessions import Entry, Session, SessionStore, new_session_id
from seekwire.server.telemetry.record import current_record
from seekwire.server.upstream.client import JSON, CallInfo, Upstream
from seekwire.server.validation import check_converse_start
from seekwire.v1 import chat_pb2

log = logging.getLogger(__name__)

OUTBOX_SIZE = 32  # events buffered toward a slow reader before the upstream read pauses
INBOX_SIZE = 64  # caller messages queued behind a running turn before reading pauses
MAX_CANCEL_MARKS = 256  # cancels for turns not seen yet, oldest forgotten first
_START_ONLY = frozenset({"model", "messages", "session_id"})
_DELTA_FIELDS = ("content", "reasoning_content", "tool_calls", "logprobs")


def _stream_error(reason: str, message: str, code: grpc.StatusCode) -> GatewayError:
    return GatewayError(code, reason, message)


@dataclass(slots=True)
class _Answer:
    """The assistant's answer of one upstream call, accumulated from its chunks."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str = ""
    usage: JSON | None = None
    model: str = ""
    id: str = ""

    def add(self, delta: JSON) -> None:
        if delta.get("content"):
            self.content.append(delta["content"])
        if delta.get("reasoning_content"):
            self.reasoning.append(delta["reasoning_content"])
        for fragment in delta.get("tool_calls") or ():
            call = self.tool_calls.setdefault(
                fragment.get("index", 0),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            call["id"] = fragment.get("id") or call["id"]
            call["type"] = fragment.get("type") or call["type"]
            function = fragment.get("function") or {}
            call["function"]["name"] = function.get("name") or call["function"]["name"]
            call["function"]["arguments"] += function.get("arguments") or ""

    def message(self, thinking: bool) -> JSON:
        message: JSON = {"role": "assistant", "content": "".join(self.content)}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
            # In thinking mode DeepSeek requires the reasoning back after tool calls (reference
            # §3.2), even when there was none to speak of: " " is the smallest it accepts.
            if self.reasoning or thinking:
                message["reasoning_content"] = "".join(self.reasoning) or " "
        return message


class Conversation:
    def __init__(
        self,
        upstream: Upstream,
        sessions: SessionStore,
        caller: Caller,
        deadline: float | None,
        tracer: trace.Tracer,
    ) -> None:
        self._tracer = tracer
        record = current_record()
        self._rpc_context = record.otel_context if record is not None else None
        self._upstream = upstream
        self._sessions = sessions
        self._caller = caller
        self._deadline = deadline
        self._outbox: asyncio.Queue[chat_pb2.ConverseResponse | None] = asyncio.Queue(OUTBOX_SIZE)
        self._ended = False  # the driver stopped; the outbox gets no more events
        self._session = Session("", caller.principal)
        self._options: JSON = {}
        self._thinking = True
        self._used: set[str] = set()  # turn ids of this session: each names one turn only
        self._current = ""  # the turn the driver is on
        self._task: asyncio.Task[_Answer] | None = None  # its upstream call
        self._cancel_current = False
        self._cancelled: OrderedDict[str, None] = OrderedDict()  # queued turns to skip

    async def events(
        self, requests: AsyncIterator[chat_pb2.ConverseRequest]
    ) -> AsyncIterator[chat_pb2.ConverseResponse]:
        first = await anext(requests, None)
        if first is None or first.WhichOneof("event") != "start":
            raise _stream_error(
                "CONVERSE_START_REQUIRED",
                "the first message of Converse must be `start`",
                grpc.StatusCode.INVALID_ARGUMENT,
            )
        resumed = await self._open(first.start)
        yield chat_pb2.ConverseResponse(
            session_started=chat_pb2.ConverseSessionStarted(
                session_id=self._session.id, resumed_messages=resumed
            )
        )
        driver = asyncio.create_task(self._drive(requests))
        try:
            while not (self._ended and self._outbox.empty()):
                event = await self._outbox.get()
                if event is None:
                    break
                yield event
            await driver  # a stream-level error ends the RPC with its status
        finally:
            await _stop(driver)

    async def _open(self, start: chat_pb2.ConverseStart) -> int:
        check_converse_start(start)
        resumed = 0
        if start.HasField("session_id"):
            session = await self._sessions.load(self._caller.principal, start.session_id)
            if session is None:
                raise _stream_error(
                    "SESSION_NOT_FOUND",
                    "no such session for this caller (expired, deleted or never created)",
                    grpc.StatusCode.NOT_FOUND,
                )
            self._session = session
            self._used = {e.turn_id for e in session.entries if e.turn_id}
            resumed = len(session.upstream_messages())
        else:
            self._session = Session(new_session_id(), self._caller.principal)
        options = json_format.MessageToDict(start, preserving_proto_field_name=True)
        self._options = {k: v for k, v in options.items() if k not in _START_ONLY}
        self._options["model"] = start.model
        self._thinking = (self._options.get("thinking") or {}).get("type") != "disabled"
        for message in options.get("messages", ()):
            self._session.entries.append(Entry(message))
        await self._sessions.save(self._session)
        return resumed

    # -- reading ------------------------------------------------------------------

    async def _drive(self, requests: AsyncIterator[chat_pb2.ConverseRequest]) -> None:
        inbox: asyncio.Queue[chat_pb2.ConverseRequest | GatewayError | None] = asyncio.Queue(
            INBOX_SIZE
        )
        reader = asyncio.create_task(self._read(requests, inbox))
        try:
            while (item := await inbox.get()) is not None:
                if isinstance(item, GatewayError):
                    raise item
                kind = item.WhichOneof("event")
                if kind == "user_message":
                    await self._user_message(item.user_message)
                elif kind == "tool_result":
                    await self._tool_result(item.tool_result)
                else:
                    await self._cancel_waiting(item.cancel.turn_id)
        finally:
            await _stop(reader)
            self._ended = True
            # A caller that stopped reading leaves the outbox full: then the events loop
            # sees `_ended` once it has drained, or has gone away already.
            with contextlib.suppress(asyncio.QueueFull):
                self._outbox.put_nowait(None)

    async def _read(
        self,
        requests: AsyncIterator[chat_pb2.ConverseRequest],
        inbox: asyncio.Queue[chat_pb2.ConverseRequest | GatewayError | None],
    ) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("event")
                if kind == "cancel":
                    # A cancel acts at once on the running turn; anything else waits its turn.
                    if not self._cancel_running(request.cancel.turn_id):
                        await inbox.put(request)
                elif kind in ("user_message", "tool_result"):
                    await inbox.put(request)
                else:
                    message = (
                        "`start` may only be the first message" if kind else "empty ConverseRequest"
                    )
                    await inbox.put(
                        _stream_error(
                            "CONVERSE_BAD_SEQUENCE", message, grpc.StatusCode.INVALID_ARGUMENT
                        )
                    )
                    return
        except Exception as exc:  # the caller's side of the stream broke
            log.warning("Converse stopped reading the caller: %s", type(exc).__name__)
            await inbox.put(
                _stream_error(
                    "CONVERSE_READ_FAILED",
                    "reading the caller's messages failed",
                    grpc.StatusCode.INTERNAL,
                )
            )
            return
        await inbox.put(None)

    def _cancel_running(self, turn_id: str) -> bool:
        """Stops the turn the driver is on when `turn_id` names it (or is empty)."""
        if not self._current or turn_id not in ("", self._current):
            if turn_id:
                self._cancelled[turn_id] = None  # maybe a queued turn
                while len(self._cancelled) > MAX_CANCEL_MARKS:
                    self._cancelled.popitem(last=False)
            return False
        if self._task is not None:
            self._task.cancel()
        else:
            self._cancel_current = True  # not upstream yet: the driver checks before it calls
        return True

    # -- turns ----------------------------------------------------------------------

    def _new_turn_id(self) -> str:
        n = len(self._used) + 1
        while f"turn-{n}" in self._used:
            n += 1
        return f"turn-{n}"

    async def _user_message(self, message: chat_pb2.ConverseUserMessage) -> None:
        turn_id = message.turn_id if message.HasField("turn_id") else self._new_turn_id()
        if turn_id in self._cancelled:
            del self._cancelled[turn_id]
            await self._error(turn_id, _cancelled(turn_id))
            return
        if turn_id in self._used:
            violation = (
                "user_message.turn_id",
                f"{turn_id!r} already names a turn of this session",
            )
            await self._error(turn_id, invalid_argument([violation]))
            return
        if not message.content:
            await self._error(turn_id, invalid_argument([("user_message.content", "is required")]))
            return
        pending = self._session.pending_tools
        if pending:
            waiting = f"turn {self._session.tool_turn} waits for tool results: {', '.join(pending)}"
            error = GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION, "TOOL_RESULTS_PENDING", waiting
            )
            await self._error(turn_id, error)
            return
        self._used.add(turn_id)
        self._session.entries.append(Entry({"role": "user", "content": message.content}, turn_id))
        await self._turn(turn_id)

    async def _tool_result(self, result: chat_pb2.ConverseToolResult) -> None:
        session = self._session
        if result.tool_call_id not in session.pending_tools:
            violation = (
                "tool_result.tool_call_id",
                f"no pending tool call {result.tool_call_id!r}",
            )
            await self._error(session.tool_turn, invalid_argument([violation]))
            return
        session.pending_tools.remove(result.tool_call_id)
        message = {"role": "tool", "content": result.content, "tool_call_id": result.tool_call_id}
        session.entries.append(Entry(message, session.tool_turn))
        if not session.pending_tools:
            await self._turn(session.tool_turn)

    async def _cancel_waiting(self, turn_id: str) -> None:
        """A cancel for the turn that waits for tool results ends it; others were marked."""
        tool_turn = self._session.tool_turn
        if self._session.pending_tools and turn_id in ("", tool_turn):
            self._cancelled.pop(tool_turn, None)
            await self._end_turn(tool_turn, _Answer(), "cancelled", _cancelled(tool_turn))

    async def _turn(self, turn_id: str) -> None:
        """One upstream call for `turn_id`, traced as a child span of the stream's."""
        span = self._tracer.start_span(
            "converse turn",
            context=self._rpc_context,
            attributes={"gen_ai.conversation.id": self._session.id, "seekwire.turn_id": turn_id},
        )
        try:
            outcome = await self._run_turn(turn_id, trace.set_span_in_context(span))
        finally:
            if outcome != "complete":
                span.set_status(StatusCode.ERROR, outcome)
            span.end()

    async def _run_turn(self, turn_id: str, trace_context: Context) -> str:
        """Runs the turn; returns how it ended: complete, cancelled or failed."""
        self._current, self._cancel_current = turn_id, False
        try:
            try:
                admission = await self._admit()
            except GatewayError as refused:
                await self._end_turn(turn_id, _Answer(), "failed", refused)
                return "failed"
            answer = _Answer()
            if self._cancel_current:
                task = None
            else:
                task = self._task = asyncio.create_task(
                    self._stream(turn_id, answer, trace_context)
                )
                try:
                    await asyncio.wait([task])
                finally:
                    self._task = None
                    await _stop(task)
        finally:
            self._current = ""
        if task is None or task.cancelled():
            if admission is not None and task is None:
                await admission.settle(0)  # nothing went upstream: give the estimate back
            await self._end_turn(turn_id, answer, "cancelled", _cancelled(turn_id))
            return "cancelled"
        exc = task.exception()
        if exc is not None:
            error = as_gateway_error(exc) if isinstance(exc, Exception) else None
            if error is None:
                log.error("Converse turn failed unexpectedly", exc_info=exc)
                error = internal("Converse")
            await self._end_turn(turn_id, answer, "failed", error)
            return "failed"
        if admission is not None and answer.usage:
            await admission.settle(int(answer.usage.get("total_tokens", 0)))
        self._session.entries.append(Entry(answer.message(self._thinking), turn_id))
        calls = [answer.tool_calls[i] for i in sorted(answer.tool_calls)]
        if answer.finish_reason == "tool_calls" and calls:
            self._session.pending_tools = [c["id"] for c in calls]
            self._session.tool_turn = turn_id
        await self._sessions.save(self._session)
        end = from_json(
            chat_pb2.ConverseTurnEnd,
            {
                "turn_id": turn_id,
                "finish_reason": answer.finish_reason,
                "usage": answer.usage,
                "model": answer.model,
                "id": answer.id,
                "tool_calls": [dict(c, index=i) for i, c in enumerate(calls)],
            },
        )
        await self._outbox.put(chat_pb2.ConverseResponse(turn_end=end))
        return "complete"

    async def _admit(self) -> Admission | None:
        """Takes this turn's request and prompt estimate from the caller's rate limits."""
        limits = current_limits()
        if limits is None:
            return None
        messages = self._session.upstream_messages()
        length = sum(
            len(m.get("content") or "") + len(m.get("reasoning_content") or "") for m in messages
        )
        estimate = estimate_tokens(length, len(messages))
        return await limits.admit_turn(self._caller, self._options["model"], estimate)

    async def _end_turn(
        self, turn_id: str, answer: _Answer, status: str, error: GatewayError
    ) -> None:
        """Records a turn that did not complete; none of it goes upstream again."""
        if answer.content or answer.reasoning or answer.tool_calls:
            self._session.entries.append(Entry(answer.message(self._thinking), turn_id, status))
        for entry in self._session.entries:
            if entry.turn_id == turn_id:
                entry.status = status
        if self._session.tool_turn == turn_id:
            self._session.pending_tools, self._session.tool_turn = [], ""
        await self._sessions.save(self._session)
        await self._error(turn_id, error)

    async def _stream(self, turn_id: str, answer: _Answer, trace_context: Context) -> _Answer:
        body = dict(self._options)
        body["messages"] = self._session.upstream_messages()
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        info = CallInfo("chat", self._options["model"], trace_context)
        events = self._upstream.stream(
            "/chat/completions", orjson.dumps(body), self._deadline, info
        )
        async with aclosing(events):
            async for event in events:
                answer.model = event.get("model") or answer.model
                answer.id = event.get("id") or answer.id
                if event.get("usage"):
                    answer.usage = event["usage"]
                for choice in event.get("choices") or ():
                    delta = choice.get("delta") or {}
                    answer.add(delta)
                    answer.finish_reason = choice.get("finish_reason") or answer.finish_reason
                    if choice.get("logprobs"):
                        delta = dict(delta, logprobs=choice["logprobs"])
                    # DeepSeek's opening and closing deltas carry "" or null: nothing to relay.
                    piece = {k: delta[k] for k in _DELTA_FIELDS if delta.get(k)}
                    if piece:
                        chunk = from_json(chat_pb2.ConverseChunk, {"turn_id": turn_id, **piece})
                        await self._outbox.put(chat_pb2.ConverseResponse(chunk=chunk))
        return answer

    async def _error(self, turn_id: str, error: GatewayError) -> None:
        event = chat_pb2.ConverseError(turn_id=turn_id, status=error.to_proto())
        await self._outbox.put(chat_pb2.ConverseResponse(error=event))


def _cancelled(turn_id: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.CANCELLED, "TURN_CANCELLED", f"turn {turn_id} was cancelled"
    )


async def _stop(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
