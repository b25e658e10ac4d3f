"""The fake's answers: deterministic text, tool calls, usage math and validation (reference §3-§9)."""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import string
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from seekwire.server.fake.behavior import Behavior, strip_directives

ROLES = ("system", "user", "assistant", "tool")
MAX_OUTPUT_TOKENS = 393_216
FIM_MAX_TOKENS = 4096
CONTEXT_TOKENS = 1_000_000
_WORDS = (
    "Sure",
    ",",
    " here",
    " is",
    " a",
    " fake",
    " answer",
    " from",
    " the",
    " DeepSeek",
    " stand",
    "-in",
    ".",
    " It",
    " streams",
    " one",
    " token",
    " per",
    " chunk",
    " and",
    " counts",
    " usage",
    " like",
    " the",
    " real",
    " thing",
    ".",
)
_THOUGHTS = (
    "The",
    " user",
    " wants",
    " an",
    " answer",
    ".",
    " Let",
    " me",
    " think",
    " it",
    " through",
    " step",
    " by",
    " step",
    ".",
)


class Rejection(Exception):
    """A request DeepSeek would refuse: HTTP status plus its error envelope."""

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


def error_body(message: str, error_type: str = "invalid_request_error") -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": error_type,
                "param": None,
                "code": "invalid_request_error",
            }
        }
    )


def estimate_tokens(text: str) -> int:
    """DeepSeek's rule of thumb (reference §7): about 0.3 tokens per character."""
    return math.ceil(len(text) * 0.3)


def take(words: tuple[str, ...], n: int) -> list[str]:
    return [words[i % len(words)] for i in range(n)]


def call_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "call_00_" + "".join(secrets.choice(alphabet) for _ in range(24))


class PrefixCache:
    """DeepSeek's disk cache, roughly: a prompt whose leading messages were seen before hits."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._capacity = capacity

    def hit_tokens(self, messages: list[dict[str, Any]], per_message: list[int]) -> int:
        digest = hashlib.blake2b(digest_size=16)
        hit = 0
        total = 0
        for message, tokens in zip(messages, per_message, strict=True):
            digest.update(orjson.dumps(message, option=orjson.OPT_SORT_KEYS))
            key = digest.copy().digest()
            total += tokens
            if key in self._seen:
                self._seen.move_to_end(key)
                hit = total
            else:
                self._seen[key] = None
                if len(self._seen) > self._capacity:
                    self._seen.popitem(last=False)
        return hit


def usage(prompt: int, hit: int, completion: int, reasoning: int | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": hit},
    }
    if reasoning is not None:
        result["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    result["prompt_cache_hit_tokens"] = hit
    result["prompt_cache_miss_tokens"] = prompt - hit
    return result


@dataclass(slots=True)
class ChatPlan:
    """Everything the fake will say in one chat answer, before it is framed as JSON or SSE."""

    id: str
    created: int
    model: str
    thinking: bool
    reasoning: list[str]
    content: list[str]
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    usage: dict[str, Any]
    logprobs: int | None  # top_logprobs when logprobs were asked for
    include_usage_null: bool
    fingerprint: str = field(default="fp_fake_seekwire_prod1204")


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    return text + (message.get("reasoning_content") or "")


def _validate_messages(messages: Any, thinking: bool) -> list[dict[str, Any]]:
    prefix = "Failed to deserialize the JSON body into the target type"
    if not isinstance(messages, list):
        raise Rejection(400, f"{prefix}: missing field `messages` at line 1 column 1")
    if not messages:
        raise Rejection(400, "Empty input messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise Rejection(400, f"{prefix}: messages[{i}]: missing field `role`")
        role = message["role"]
        if role not in ROLES:
            raise Rejection(
                400,
                f"{prefix}: messages[{i}]: unknown variant `{role}`, expected one of "
                "`system`, `user`, `assistant`, `tool`",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise Rejection(
                400, f"{prefix}: messages[{i}]: invalid type: sequence, expected a string"
            )
        if role == "tool" and not message.get("tool_call_id"):
            raise Rejection(400, f"{prefix}: messages[{i}]: missing field `tool_call_id`")
    if thinking:
        for i, message in enumerate(messages):
            calls_tools = message["role"] == "assistant" and message.get("tool_calls")
            if calls_tools and message.get("reasoning_content") is None:
                raise Rejection(
                    400,
                    f"Missing `reasoning_content` field in the assistant message at message "
                    f"index {i}. For more information, please refer to "
                    "https://api-docs.deepseek.com/guides/thinking_mode#tool-calls",
                )
    return messages


def _tool_arguments(tool: dict[str, Any]) -> str:
    parameters = (tool.get("function") or {}).get("parameters") or {}
    properties = parameters.get("properties") or {}
    required = parameters.get("required") or list(properties)
    args: dict[str, Any] = {}
    for name in required:
        kind = (properties.get(name) or {}).get("type")
        args[name] = 1 if kind in ("integer", "number") else True if kind == "boolean" else "fake"
    return orjson.dumps(args).decode().replace(",", ", ").replace(":", ": ")


def _choose_tool(body: dict[str, Any], behavior: Behavior, last_role: str) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none" or behavior.tool_call is False:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        named = [t for t in tools if (t.get("function") or {}).get("name") == name]
        if not named:
            raise Rejection(400, f"tool_choice names an unknown function: {name}")
        return dict(named[0])
    if behavior.tool_call or choice == "required" or last_role == "user":
        return dict(tools[0])
    return None


class Generator:
    """Validates requests like DeepSeek and plans the answers."""

    def __init__(self, models: tuple[str, ...], aliases: dict[str, str]) -> None:
        self.models = models
        self.aliases = aliases
        self.cache = PrefixCache()

    def _model(self, body: dict[str, Any], behavior: Behavior) -> str:
        model = body.get("model")
        if not isinstance(model, str):
            raise Rejection(
                400,
                "Failed to deserialize the JSON body into the target type: missing field `model`",
            )
        if model not in self.models and model not in self.aliases:
            raise Rejection(400, "Model Not Exist")
        return behavior.model or self.aliases.get(model, model)

    def chat(self, body: dict[str, Any], behavior: Behavior) -> ChatPlan:
        model = self._model(body, behavior)
        thinking_type = (body.get("thinking") or {}).get("type", "enabled")
        thinking = thinking_type == "enabled" and body.get("model") != "deepseek-chat"
        messages = _validate_messages(body.get("messages"), thinking)
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and not 1 <= max_tokens <= MAX_OUTPUT_TOKENS:
            raise Rejection(
                400,
                f"Invalid max_tokens value, the valid range of max_tokens is [1, {MAX_OUTPUT_TOKENS}]",
            )
        choice = body.get("tool_choice")
        if thinking and (choice == "required" or isinstance(choice, dict)):
            raise Rejection(400, "Thinking mode does not support this tool_choice")
        per_message = [estimate_tokens(_message_text(m)) + 4 for m in messages]
        prompt = sum(per_message)
        if prompt > CONTEXT_TOKENS:
            raise Rejection(
                400,
                f"This model's maximum context length is {CONTEXT_TOKENS} tokens. However, you "
                f"requested {prompt} tokens. Please reduce the length of the messages or completion.",
            )
        hit = self.cache.hit_tokens(messages, per_message)

        tool = _choose_tool(body, behavior, messages[-1]["role"])
        reasoning = take(_THOUGHTS, behavior.reasoning_tokens) if thinking else []
        tool_calls: list[dict[str, Any]] = []
        content: list[str] = []
        if tool is not None:
            function = tool.get("function") or {}
            tool_calls.append(
                {
                    "index": 0,
                    "id": call_id(),
                    "type": "function",
                    "function": {
                        "name": function.get("name", ""),
                        "arguments": _tool_arguments(tool),
                    },
                }
            )
        elif (body.get("response_format") or {}).get("type") == "json_object":
            content = ['{"', "answer", '":', ' "', "fake", '"}']
        elif behavior.echo:
            said = next(
                (m.get("content") or "" for m in reversed(messages) if m["role"] == "user"), ""
            )
            content = re.findall(r"\s*\S+", strip_directives(said))
        else:
            content = take(_WORDS, behavior.tokens)
        if behavior.token_bytes:
            content = [token.ljust(behavior.token_bytes, ".") for token in content]
        finish = behavior.finish_reason or ("tool_calls" if tool_calls else "stop")
        if max_tokens is not None and len(reasoning) + len(content) > max_tokens:
            content = content[: max(0, max_tokens - len(reasoning))]
            finish = behavior.finish_reason or "length"
        tool_tokens = sum(estimate_tokens(c["function"]["arguments"]) + 2 for c in tool_calls)
        completion = len(reasoning) + len(content) + tool_tokens
        logprobs = body.get("top_logprobs", 0) if body.get("logprobs") else None
        return ChatPlan(
            id=str(uuid.uuid4()),
            created=_now(),
            model=model,
            thinking=thinking,
            reasoning=reasoning,
            content=content,
            tool_calls=tool_calls,
            finish_reason=finish,
            usage=usage(prompt, hit, completion, len(reasoning) if thinking else None),
            logprobs=logprobs,
            include_usage_null=bool((body.get("stream_options") or {}).get("include_usage")),
        )

    def fim(self, body: dict[str, Any], behavior: Behavior) -> tuple[ChatPlan, str]:
        model = self._model(body, behavior)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise Rejection(
                400,
                "Failed to deserialize the JSON body into the target type: missing field `prompt`",
            )
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and not 1 <= max_tokens <= FIM_MAX_TOKENS:
            raise Rejection(
                400,
                f"Invalid max_tokens value, the valid range of max_tokens is [1, {FIM_MAX_TOKENS}]",
            )
        content = take(_WORDS, behavior.tokens)
        finish = behavior.finish_reason or "stop"
        if max_tokens is not None and len(content) > max_tokens:
            content, finish = content[:max_tokens], behavior.finish_reason or "length"
        prompt_tokens = estimate_tokens(prompt + (body.get("suffix") or "")) + 2
        plan = ChatPlan(
            id=str(uuid.uuid4()),
            created=_now(),
            model=model,
            thinking=False,
            reasoning=[],
            content=content,
            tool_calls=[],
            finish_reason=finish,
            usage=usage(prompt_tokens, 0, len(content), None),
            logprobs=body.get("logprobs"),
            include_usage_null=bool((body.get("stream_options") or {}).get("include_usage")),
        )
        return plan, (prompt if body.get("echo") else "")


def _now() -> int:
    return int(time.time())


def token_logprob(token: str, top: int) -> dict[str, Any]:
    alternatives = [
        {
            "token": token if i == 0 else f"{token}~{i}",
            "logprob": -0.25 * (i + 1),
            "bytes": list((token if i == 0 else f"{token}~{i}").encode()),
        }
        for i in range(top)
    ]
    return {
        "token": token,
        "logprob": -0.25,
        "bytes": list(token.encode()),
        "top_logprobs": alternatives,
    }
