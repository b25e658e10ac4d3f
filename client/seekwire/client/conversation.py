"""Converse from the caller's side: send messages, cancel turns, read events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from seekwire.client.errors import SeekwireError, from_rpc_error, from_status
from seekwire.v1 import chat_pb2, common_pb2


@dataclass
class Answer:
    """One turn's answer, as `Conversation.ask` collects it."""

    turn_id: str
    content: str = ""
    reasoning_content: str = ""
    finish_reason: str = ""
    usage: common_pb2.Usage | None = None
    tool_calls: list[chat_pb2.ToolCall] = field(default_factory=list)


class Conversation:
    """A Converse stream. Write with send / send_tool_result / cancel; read by iterating
    (every event) or with `ask` / `receive_turn` (one turn's events)."""

    def __init__(self, call: Any) -> None:
        self._call = call  # grpc.aio.StreamStreamCall[ConverseRequest, ConverseResponse]
        self.session_id = ""
        self.resumed_messages = 0

    async def open(self, start: chat_pb2.ConverseStart) -> None:
        await self._call.write(chat_pb2.ConverseRequest(start=start))
        event = await self._read()
        if event is None or event.WhichOneof("event") != "session_started":
            raise SeekwireError("Converse did not start", code=grpc.StatusCode.INTERNAL)
        self.session_id = event.session_started.session_id
        self.resumed_messages = event.session_started.resumed_messages

    async def _read(self) -> chat_pb2.ConverseResponse | None:
        try:
            event = await self._call.read()
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return None if event is grpc.aio.EOF else event

    async def _write(self, request: chat_pb2.ConverseRequest) -> None:
        try:
            await self._call.write(request)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None

    async def send(self, content: str, *, turn_id: str | None = None) -> str:
        """Starts a turn; returns its id (generated here unless given)."""
        turn_id = turn_id or uuid.uuid4().hex[:12]
        await self._write(
            chat_pb2.ConverseRequest(
                user_message=chat_pb2.ConverseUserMessage(content=content, turn_id=turn_id)
            )
        )
        return turn_id

    async def send_tool_result(self, tool_call_id: str, content: str) -> None:
        result = chat_pb2.ConverseToolResult(tool_call_id=tool_call_id, content=content)
        await self._write(chat_pb2.ConverseRequest(tool_result=result))

    async def cancel(self, turn_id: str | None = None) -> None:
        """Stops `turn_id` (or the running turn); its end arrives as a CANCELLED error event."""
        await self._write(chat_pb2.ConverseRequest(cancel=chat_pb2.ConverseCancel(turn_id=turn_id)))

    def __aiter__(self) -> AsyncIterator[chat_pb2.ConverseResponse]:
        return self._events()

    async def _events(self) -> AsyncIterator[chat_pb2.ConverseResponse]:
        while (event := await self._read()) is not None:
            yield event

    async def receive_turn(self, turn_id: str) -> AsyncIterator[chat_pb2.ConverseResponse]:
        """This turn's events up to and including its turn_end or error."""
        async for event in self:
            yield event
            kind = event.WhichOneof("event")
            if kind in ("turn_end", "error") and getattr(event, kind).turn_id == turn_id:
                return
        raise SeekwireError("Converse ended mid-turn", code=grpc.StatusCode.UNAVAILABLE)

    async def ask(self, content: str, *, turn_id: str | None = None) -> Answer:
        """Sends `content` and collects the answer; an in-band error raises SeekwireError."""
        return await self.collect(await self.send(content, turn_id=turn_id))

    async def collect(self, turn_id: str) -> Answer:
        """Collects the next part of a turn (after `send`, or after tool results)."""
        answer = Answer(turn_id)
        content: list[str] = []
        reasoning: list[str] = []
        async for event in self.receive_turn(turn_id):
            kind = event.WhichOneof("event")
            if kind == "chunk" and event.chunk.turn_id == turn_id:
                content.append(event.chunk.content)
                reasoning.append(event.chunk.reasoning_content)
            elif kind == "turn_end":
                answer.finish_reason = event.turn_end.finish_reason
                answer.usage = event.turn_end.usage
                answer.tool_calls = list(event.turn_end.tool_calls)
            elif kind == "error":
                raise from_status(event.error.status)
        answer.content = "".join(content)
        answer.reasoning_content = "".join(reasoning)
        return answer

    async def close(self) -> None:
        """Half-closes: turns already sent still finish; their events remain readable."""
        await self._call.done_writing()

    def abort(self) -> None:
        self._call.cancel()
