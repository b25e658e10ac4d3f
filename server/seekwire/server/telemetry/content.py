"""Prompts and answers as GenAI semantic-convention span attributes (`gen_ai.input.messages`,
`gen_ai.output.messages`, JSON), only for operators who set `otel_capture_content`."""

from __future__ import annotations

from typing import Any

import orjson

JSON = dict[str, Any]


def _parts(message: JSON) -> list[JSON]:
    parts: list[JSON] = []
    if message.get("role") == "tool":
        return [
            {
                "type": "tool_call_response",
                "id": message.get("tool_call_id"),
                "response": message.get("content"),
            }
        ]
    if message.get("reasoning_content"):
        parts.append({"type": "reasoning", "content": message["reasoning_content"]})
    if message.get("content"):
        parts.append({"type": "text", "content": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments"),
            }
        )
    return parts


def input_messages(body: bytes) -> str:
    """The request's messages (chat) or prompt (FIM)."""
    request = orjson.loads(body)
    if "messages" in request:
        messages = [{"role": m.get("role"), "parts": _parts(m)} for m in request["messages"]]
    else:
        messages = [{"role": "user", "parts": [{"type": "text", "content": request.get("prompt")}]}]
    return orjson.dumps(messages).decode()


class Answer:
    """Collects the answer of a completion or of a stream's deltas, choice by choice."""

    __slots__ = ("_choices",)

    def __init__(self) -> None:
        self._choices: dict[int, JSON] = {}

    def observe(self, event: JSON) -> None:
        for choice in event.get("choices") or ():
            into = self._choices.setdefault(
                choice.get("index", 0), {"content": "", "reasoning_content": "", "calls": {}}
            )
            part = choice.get("message") or choice.get("delta") or {"content": choice.get("text")}
            into["content"] += part.get("content") or ""
            into["reasoning_content"] += part.get("reasoning_content") or ""
            for call in part.get("tool_calls") or ():
                function = call.get("function") or {}
                held = into["calls"].setdefault(
                    call.get("index", len(into["calls"])),
                    {"id": None, "function": {"name": None, "arguments": ""}},
                )
                held["id"] = call.get("id") or held["id"]
                held["function"]["name"] = function.get("name") or held["function"]["name"]
                held["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                into["finish_reason"] = choice["finish_reason"]

    def messages(self) -> str:
        out = []
        for _, choice in sorted(self._choices.items()):
            message = {**choice, "tool_calls": list(choice["calls"].values())}
            out.append(
                {
                    "role": "assistant",
                    "parts": _parts(message),
                    "finish_reason": choice.get("finish_reason"),
                }
            )
        return orjson.dumps(out).decode()
