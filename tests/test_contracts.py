"""Design principle 1: DeepSeek's JSON parses into the messages unchanged and comes back out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google.protobuf import json_format

from seekwire.server.convert import from_json, request_body
from seekwire.v1 import account_pb2, chat_pb2, completion_pb2, model_pb2

# Reference §4, recorded V4 thinking + tool call answer.
TOOL_CALL_COMPLETION = {
    "id": "21d2ddcb-4947-4e28-a783-857aedbe6ace",
    "object": "chat.completion",
    "created": 1786782778,
    "model": "deepseek-v4-flash",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "",
                "reasoning_content": "The user asks about weather in San Francisco. I'll call the weather tool.",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_00_lCIkdHRa7AKmCG3TlxXz1061",
                        "type": "function",
                        "function": {
                            "name": "weather",
                            "arguments": '{"location": "San Francisco"}',
                        },
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 374,
        "completion_tokens": 60,
        "total_tokens": 434,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 16},
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": 374,
    },
    "system_fingerprint": "a26a7955944dc5c60445bff77fac9c8e",
}

# Reference §5.4, the V4 thinking stream with include_usage.
STREAM = b"""\
data: {"id":"b1e23612-29d5-4f66-b185-fb61fdde0ac9","object":"chat.completion.chunk","created":1786782776,"model":"deepseek-v4-flash","system_fingerprint":"a26a7955944dc5c60445bff77fac9c8e","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},"logprobs":null,"finish_reason":null}],"usage":null}
data: {"id":"b1e23612-29d5-4f66-b185-fb61fdde0ac9","object":"chat.completion.chunk","created":1786782776,"model":"deepseek-v4-flash","system_fingerprint":"a26a7955944dc5c60445bff77fac9c8e","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"We need count r."},"logprobs":null,"finish_reason":null}],"usage":null}
data: {"id":"b1e23612-29d5-4f66-b185-fb61fdde0ac9","object":"chat.completion.chunk","created":1786782776,"model":"deepseek-v4-flash","system_fingerprint":"a26a7955944dc5c60445bff77fac9c8e","choices":[{"index":0,"delta":{"content":"There are 3","reasoning_content":null},"logprobs":null,"finish_reason":null}],"usage":null}
data: {"id":"b1e23612-29d5-4f66-b185-fb61fdde0ac9","object":"chat.completion.chunk","created":1786782776,"model":"deepseek-v4-flash","system_fingerprint":"a26a7955944dc5c60445bff77fac9c8e","choices":[{"index":0,"delta":{"content":"","reasoning_content":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":97,"completion_tokens":106,"total_tokens":203,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":88},"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":97}}
data: {"id":"b1e23612","object":"chat.completion.chunk","created":1786782776,"model":"deepseek-v4-flash","system_fingerprint":"x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_00_abc","type":"function","function":{"name":"weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]}
data: {"id":"b1e23612","object":"chat.completion.chunk","created":1786782776,"model":"deepseek-v4-flash","system_fingerprint":"x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\""}}]},"logprobs":null,"finish_reason":null}]}
"""

# A request using every field of reference §3.
FULL_REQUEST = {
    "model": "deepseek-v4-pro",
    "messages": [
        {"role": "system", "content": "You are terse.", "name": "policy"},
        {"role": "user", "content": "Weather in SF?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Call the tool.",
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_00_x",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"location": "SF"}'},
                }
            ],
        },
        {"role": "tool", "content": "18C", "tool_call_id": "call_00_x"},
        {"role": "assistant", "content": "```python\n", "prefix": True},
    ],
    "thinking": {"type": "enabled"},
    "reasoning_effort": "max",
    "max_tokens": 2048,
    "response_format": {"type": "json_object"},
    "stop": ["```", "END"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 0.0,
    "top_p": 0.9,
    "frequency_penalty": -0.5,
    "presence_penalty": 0.5,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"],
                },
                "strict": True,
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "weather"}},
    "logprobs": True,
    "top_logprobs": 5,
    "user_id": "user-42_a",
}


def without_nulls(value: Any) -> Any:
    """Protobuf's JSON mapping writes no nulls: an unset field is the null."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def to_dict(message: Any) -> Any:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def test_full_request_parses_unchanged_and_goes_upstream_unchanged() -> None:
    request = json_format.ParseDict(FULL_REQUEST, chat_pb2.ChatCompletionRequest())
    assert to_dict(request) == without_nulls(FULL_REQUEST)
    upstream = orjson.loads(request_body(request, stream=True))
    assert upstream == without_nulls(FULL_REQUEST)


def test_unset_scalars_are_not_sent_as_zero() -> None:
    request = json_format.ParseDict(
        {"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]},
        chat_pb2.ChatCompletionRequest(),
    )
    body = orjson.loads(request_body(request, stream=False))
    assert body == {
        "model": "deepseek-v4-flash",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }


def test_zero_values_that_were_set_are_sent() -> None:
    request = json_format.ParseDict(
        {
            "model": "m",
            "messages": [{"role": "user", "content": ""}],
            "temperature": 0,
            "top_logprobs": 0,
        },
        chat_pb2.ChatCompletionRequest(),
    )
    body = orjson.loads(request_body(request, stream=False))
    assert body["temperature"] == 0
    assert body["top_logprobs"] == 0
    assert body["messages"][0]["content"] == ""


def test_stop_accepts_a_single_string() -> None:
    request = json_format.ParseDict(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stop": "END",
            "tool_choice": "auto",
        },
        chat_pb2.ChatCompletionRequest(),
    )
    body = orjson.loads(request_body(request, stream=False))
    assert body["stop"] == "END"
    assert body["tool_choice"] == "auto"


def test_completion_round_trips_deepseek_shape() -> None:
    message = from_json(chat_pb2.ChatCompletion, TOOL_CALL_COMPLETION)
    assert to_dict(message) == without_nulls(TOOL_CALL_COMPLETION)


@pytest.mark.parametrize("line", [line for line in STREAM.splitlines() if line])
def test_chunks_round_trip_deepseek_shape(line: bytes) -> None:
    event = orjson.loads(line.removeprefix(b"data: "))
    assert to_dict(from_json(chat_pb2.ChatCompletionChunk, event)) == without_nulls(event)


def test_logprobs_round_trip() -> None:
    token = {
        "token": "Hi",
        "logprob": -0.25,
        "bytes": [72, 105],
        "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}],
    }
    completion = dict(TOOL_CALL_COMPLETION)
    completion["choices"] = [
        dict(
            TOOL_CALL_COMPLETION["choices"][0],
            logprobs={"content": [token], "reasoning_content": [token]},
        )
    ]
    assert to_dict(from_json(chat_pb2.ChatCompletion, completion)) == without_nulls(completion)


def test_unknown_upstream_fields_are_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    event = dict(TOOL_CALL_COMPLETION, service_tier="priority")
    message = from_json(chat_pb2.ChatCompletion, event)
    assert message.id == TOOL_CALL_COMPLETION["id"]
    assert "ChatCompletion.service_tier" in caplog.text


def test_fim_models_balance_round_trip() -> None:
    fim = {
        "id": "x",
        "object": "text_completion",
        "created": 1786782778,
        "model": "deepseek-v4-flash",
        "system_fingerprint": "fp",
        "choices": [
            {
                "text": "  return a + b",
                "index": 0,
                "logprobs": {
                    "text_offset": [0, 2],
                    "token_logprobs": [-0.1, -0.2],
                    "tokens": ["  ", "return"],
                    "top_logprobs": [{"  ": -0.1}, {"return": -0.2}],
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": 10,
        },
    }
    assert to_dict(from_json(completion_pb2.Completion, fim)) == fim
    models = {
        "object": "list",
        "data": [{"id": "deepseek-v4-flash", "object": "model", "owned_by": "deepseek"}],
    }
    assert to_dict(from_json(model_pb2.ListModelsResponse, models)) == models
    balance = {
        "is_available": False,
        "balance_infos": [
            {
                "currency": "CNY",
                "total_balance": "110.00",
                "granted_balance": "10.00",
                "topped_up_balance": "100.00",
            }
        ],
    }
    assert to_dict(from_json(account_pb2.GetBalanceResponse, balance)) == balance
    fim_request = {
        "model": "deepseek-v4-flash",
        "prompt": "def add(a, b):",
        "suffix": "\n",
        "echo": False,
        "logprobs": 2,
        "max_tokens": 64,
        "stop": ["\n\n"],
        "temperature": 0.2,
        "top_p": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
    }
    assert (
        to_dict(json_format.ParseDict(fim_request, completion_pb2.CompletionRequest()))
        == fim_request
    )
