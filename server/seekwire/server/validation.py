"""Checks made before any upstream call, reported as google.rpc.BadRequest field violations.

Only what is certain to fail is refused here. Model names, reasoning_effort and
other open-ended values are DeepSeek's to judge: its sets change (reference §2).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from google.protobuf import struct_pb2

from seekwire.server.errors import invalid_argument
from seekwire.v1 import chat_pb2, completion_pb2

ROLES = frozenset({"system", "user", "assistant", "tool"})
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USER_ID = re.compile(r"[A-Za-z0-9_-]*")
_MAX_STOP = 16
_MAX_TOOLS = 128

Violations = list[tuple[str, str]]


def _range(
    out: Violations, message: object, name: str, low: float, high: float | None = None
) -> None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        return
    value = getattr(message, name)
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        out.append((name, f"must be {bound}, got {value:g}"))


def _stop(
    out: Violations,
    message: chat_pb2.ChatCompletionRequest
    | chat_pb2.ConverseStart
    | completion_pb2.CompletionRequest,
) -> None:
    if not message.HasField("stop"):
        return
    stop = message.stop
    kind = stop.WhichOneof("kind")
    if kind == "null_value" or kind == "string_value":
        return
    if kind != "list_value":
        out.append(("stop", "must be a string or a list of strings"))
        return
    values = stop.list_value.values
    if len(values) > _MAX_STOP:
        out.append(("stop", f"at most {_MAX_STOP} stop sequences, got {len(values)}"))
    if any(v.WhichOneof("kind") != "string_value" for v in values):
        out.append(("stop", "every stop sequence must be a string"))


def _tool_choice(out: Violations, choice: struct_pb2.Value) -> None:
    kind = choice.WhichOneof("kind")
    if kind in ("string_value", "null_value"):
        return
    if kind == "struct_value":
        function = choice.struct_value.fields.get("function")
        if function is not None and function.struct_value.fields.get("name") is not None:
            return
        out.append(("tool_choice.function.name", "a named tool choice needs function.name"))
        return
    out.append(("tool_choice", 'must be "none", "auto", "required" or {"type": "function", ...}'))


def _messages(
    out: Violations, messages: Sequence[chat_pb2.Message], where: str = "messages"
) -> None:
    for i, message in enumerate(messages):
        at = f"{where}[{i}]"
        if not message.role:
            out.append((f"{at}.role", "is required"))
        elif message.role not in ROLES:
            out.append((f"{at}.role", f"unknown role {message.role!r}; one of {sorted(ROLES)}"))
        elif message.role == "tool" and not message.tool_call_id:
            out.append((f"{at}.tool_call_id", "a tool message answers a tool call id"))
        if message.role != "assistant" and not message.HasField("content"):
            out.append((f"{at}.content", "is required"))


def _options(
    out: Violations, request: chat_pb2.ChatCompletionRequest | chat_pb2.ConverseStart
) -> None:
    """The generation options ChatCompletionRequest and ConverseStart share."""
    if not request.model:
        out.append(("model", "is required"))
    _range(out, request, "max_tokens", 1)
    _range(out, request, "temperature", 0, 2)
    _range(out, request, "top_p", 0, 1)
    _range(out, request, "frequency_penalty", -2, 2)
    _range(out, request, "presence_penalty", -2, 2)
    _range(out, request, "top_logprobs", 0, 20)
    if request.HasField("top_logprobs") and not request.logprobs:
        out.append(("top_logprobs", "requires logprobs: true"))
    _stop(out, request)
    if len(request.tools) > _MAX_TOOLS:
        out.append(("tools", f"at most {_MAX_TOOLS} tools, got {len(request.tools)}"))
    for i, tool in enumerate(request.tools):
        if not _FUNCTION_NAME.fullmatch(tool.function.name):
            out.append((f"tools[{i}].function.name", "must match [a-zA-Z0-9_-]{1,64}"))
    if request.HasField("tool_choice"):
        _tool_choice(out, request.tool_choice)
    if request.HasField("user_id") and (
        not _USER_ID.fullmatch(request.user_id) or len(request.user_id.encode()) > 512
    ):
        out.append(("user_id", "must match [a-zA-Z0-9_-] and be at most 512 bytes"))


def check_chat(request: chat_pb2.ChatCompletionRequest) -> None:
    """Raises INVALID_ARGUMENT with every violation found, or returns."""
    out: Violations = []
    if not request.messages:
        out.append(("messages", "at least one message is required"))
    _messages(out, request.messages)
    _options(out, request)
    if out:
        raise invalid_argument(out)


def check_converse_start(start: chat_pb2.ConverseStart) -> None:
    out: Violations = []
    _messages(out, start.messages, "start.messages")
    _options(out, start)
    if out:
        raise invalid_argument(
            [(f"start.{f}" if not f.startswith("start.") else f, d) for f, d in out]
        )


def check_completion(request: completion_pb2.CompletionRequest) -> None:
    out: Violations = []
    if not request.model:
        out.append(("model", "is required"))
    if not request.prompt and not request.suffix:
        out.append(("prompt", "is required"))
    _range(out, request, "max_tokens", 1)
    _range(out, request, "temperature", 0, 2)
    _range(out, request, "top_p", 0, 1)
    _range(out, request, "frequency_penalty", -2, 2)
    _range(out, request, "presence_penalty", -2, 2)
    _range(out, request, "logprobs", 0, 20)
    _stop(out, request)
    if out:
        raise invalid_argument(out)
