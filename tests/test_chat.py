"""Chat, FIM, models and balance through a real gateway and the fake DeepSeek over HTTP."""

from __future__ import annotations

import orjson
from google.protobuf import json_format

from seekwire.v1 import account_pb2, chat_pb2, completion_pb2, model_pb2
from tests.conftest import UPSTREAM_KEY, Stack


def chat_request(**fields: object) -> chat_pb2.ChatCompletionRequest:
    body = {"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "Hello"}]}
    body.update(fields)
    return json_format.ParseDict(body, chat_pb2.ChatCompletionRequest())


async def test_unary_chat_plain(stack: Stack) -> None:
    answer = await stack.chat.CreateChatCompletion(chat_request(thinking={"type": "disabled"}))
    assert answer.object == "chat.completion"
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.startswith("Sure, here is a fake answer")
    assert not choice.message.HasField("reasoning_content")
    assert choice.finish_reason == "stop"
    usage = answer.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens == usage.prompt_cache_hit_tokens + usage.prompt_cache_miss_tokens
    # What went upstream: DeepSeek's path, our key, the caller's body and no stream.
    sent = stack.fake.requests[-1]
    assert sent.path == "/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.body == {
        "model": "deepseek-v4-flash",
        "messages": [{"role": "user", "content": "Hello"}],
        "thinking": {"type": "disabled"},
        "stream": False,
    }


async def test_unary_chat_thinking_carries_reasoning_and_its_usage(stack: Stack) -> None:
    answer = await stack.chat.CreateChatCompletion(chat_request(thinking={"type": "enabled"}))
    message = answer.choices[0].message
    assert message.reasoning_content.startswith("The user wants")
    assert answer.usage.completion_tokens_details.reasoning_tokens == 4
    assert answer.usage.prompt_tokens_details.cached_tokens == answer.usage.prompt_cache_hit_tokens


async def test_stream_plain_has_role_first_and_usage_on_finish_chunk(stack: Stack) -> None:
    chunks = [
        c
        async for c in stack.chat.StreamChatCompletion(chat_request(thinking={"type": "disabled"}))
    ]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content for c in chunks)
    assert text.startswith("Sure, here is a fake answer")
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.HasField("usage")
    assert last.usage.completion_tokens == 8
    assert all(not c.HasField("usage") for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    sent = stack.fake.requests[-1].body
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_stream_thinking_sends_reasoning_before_content(stack: Stack) -> None:
    chunks = [c async for c in stack.chat.StreamChatCompletion(chat_request())]
    kinds = []
    for chunk in chunks[1:-1]:
        delta = chunk.choices[0].delta
        kinds.append("reasoning" if delta.HasField("reasoning_content") else "content")
        assert delta.HasField("reasoning_content") != delta.HasField("content")
    assert kinds == ["reasoning"] * 4 + ["content"] * 8
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 4


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Current weather",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        },
    }
]


async def test_unary_tool_call(stack: Stack) -> None:
    answer = await stack.chat.CreateChatCompletion(chat_request(tools=TOOLS))
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_00_")
    assert call.type == "function"
    assert call.function.name == "weather"
    assert orjson.loads(call.function.arguments) == {"location": "fake"}
    # The tools went upstream with their JSON Schema intact.
    assert stack.fake.requests[-1].body["tools"] == TOOLS


async def test_streamed_tool_call_fragments_reassemble(stack: Stack) -> None:
    chunks = [c async for c in stack.chat.StreamChatCompletion(chat_request(tools=TOOLS))]
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls]
    assert calls[0].id.startswith("call_00_")
    assert calls[0].function.name == "weather"
    assert all(not tc.id and not tc.function.name for tc in calls[1:])
    assert {tc.index for tc in calls} == {0}
    arguments = "".join(tc.function.arguments for tc in calls)
    assert orjson.loads(arguments) == {"location": "fake"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_tool_round_trip_passes_reasoning_back(stack: Stack) -> None:
    first = await stack.chat.CreateChatCompletion(chat_request(tools=TOOLS))
    call = first.choices[0].message.tool_calls[0]
    history = [
        {"role": "user", "content": "Hello"},
        {
            "role": "assistant",
            "content": first.choices[0].message.content,
            "reasoning_content": first.choices[0].message.reasoning_content,
            "tool_calls": [json_format.MessageToDict(call, preserving_proto_field_name=True)],
        },
        {"role": "tool", "content": "18C and sunny", "tool_call_id": call.id},
    ]
    second = await stack.chat.CreateChatCompletion(chat_request(messages=history, tools=TOOLS))
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    sent = stack.fake.requests[-1].body["messages"][1]
    assert sent["reasoning_content"] == first.choices[0].message.reasoning_content
    # The shared prefix was cached upstream, as DeepSeek reports it.
    assert second.usage.prompt_cache_hit_tokens > 0


async def test_prefix_completion_goes_to_beta(stack: Stack) -> None:
    messages = [
        {"role": "user", "content": "Write quicksort"},
        {"role": "assistant", "content": "```python\n", "prefix": True},
    ]
    await stack.chat.CreateChatCompletion(
        chat_request(messages=messages, thinking={"type": "disabled"})
    )
    assert stack.fake.requests[-1].path == "/beta/chat/completions"


async def test_logprobs_and_json_mode(stack: Stack) -> None:
    answer = await stack.chat.CreateChatCompletion(
        chat_request(
            thinking={"type": "disabled"},
            logprobs=True,
            top_logprobs=2,
            response_format={"type": "json_object"},
        )
    )
    assert orjson.loads(answer.choices[0].message.content) == {"answer": "fake"}
    tokens = answer.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == answer.choices[0].message.content
    assert len(tokens[0].top_logprobs) == 2


async def test_fim_unary_and_stream(stack: Stack) -> None:
    request = completion_pb2.CompletionRequest(
        model="deepseek-v4-flash", prompt="def add(a, b):", suffix="\n", max_tokens=5
    )
    answer = await stack.completion.CreateCompletion(request)
    assert answer.object == "text_completion"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 5
    assert stack.fake.requests[-1].path == "/beta/completions"
    chunks = [c async for c in stack.completion.StreamCompletion(request)]
    assert "".join(c.choices[0].text for c in chunks) == answer.choices[0].text
    assert chunks[-1].usage.completion_tokens == 5


async def test_models_and_balance(stack: Stack) -> None:
    models = await stack.models.ListModels(model_pb2.ListModelsRequest())
    assert [m.id for m in models.data] == ["deepseek-v4-flash", "deepseek-v4-pro"]
    assert models.data[0].owned_by == "deepseek"
    balance = await stack.account.GetBalance(account_pb2.GetBalanceRequest())
    assert balance.is_available
    assert balance.balance_infos[0].total_balance == "110.00"
    assert [r.path for r in stack.fake.requests] == ["/models", "/user/balance"]


async def test_answered_model_may_differ_from_alias(make_stack, fake) -> None:  # type: ignore[no-untyped-def]
    fake.generator.aliases["deepseek-chat"] = "deepseek-v4-flash"
    stack = await make_stack()
    answer = await stack.chat.CreateChatCompletion(chat_request(model="deepseek-chat"))
    assert answer.model == "deepseek-v4-flash"
    assert not answer.choices[0].message.HasField("reasoning_content")


async def test_upstream_connections_are_reused(stack: Stack) -> None:
    for _ in range(5):
        await stack.chat.CreateChatCompletion(chat_request())
        _ = [c async for c in stack.chat.StreamChatCompletion(chat_request())]
    assert len(stack.fake.requests) == 10
    assert len({r.peer for r in stack.fake.requests}) == 1
