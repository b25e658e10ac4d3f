"""Traces, metrics and logs: asserted with in-memory spans, collected metrics, a scrape of the real endpoint, and
the JSON log lines of a real process."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import grpc
import orjson
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from seekwire.server.fake import Behavior
from seekwire.server.telemetry.export import OtlpPush
from seekwire.server.telemetry.instruments import Instruments
from seekwire.server.telemetry.metrics import Metrics
from seekwire.server.telemetry.setup import Telemetry
from seekwire.v1 import chat_pb2
from tests.conftest import UPSTREAM_KEY, Served, Stack, StackFactory, free_port, refused
from tests.test_chat import chat_request
from tests.test_converse import open_conversation, say, turn

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Observed:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.telemetry = Telemetry(tracer_provider)

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> list[Any]:
        found = []
        for resource in self.telemetry.metrics.collect().resource_metrics:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found


@pytest.fixture
async def observed(make_stack: StackFactory) -> tuple[Stack, Observed]:
    seen = Observed()
    stack = await make_stack(telemetry=seen.telemetry, retry_base_delay=0.01)
    return stack, seen


async def test_server_and_client_spans_with_genai_attributes(
    observed: tuple[Stack, Observed],
) -> None:
    stack, seen = observed
    await stack.chat.CreateChatCompletion(
        chat_request(thinking={"type": "disabled"}), metadata=(("traceparent", TRACEPARENT),)
    )
    (server,) = seen.finished("seekwire.v1.ChatService/CreateChatCompletion")
    (client,) = seen.finished("chat deepseek-v4-flash")
    assert server.kind is SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == TRACE_ID  # the caller's trace continues
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert client.kind is SpanKind.CLIENT
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    attributes = dict(client.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "deepseek"
    assert attributes["gen_ai.request.model"] == "deepseek-v4-flash"
    assert attributes["gen_ai.response.model"] == "deepseek-v4-flash"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.usage.output_tokens"] == 8
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["seekwire.upstream.attempt"] == 1
    # DeepSeek receives the trace context of the attempt's span.
    sent = stack.fake.requests[-1].headers["traceparent"]
    assert sent.split("-")[1] == TRACE_ID
    assert sent.split("-")[2] == format(client.context.span_id, "016x")


async def test_without_an_exporter_no_span_is_recorded_but_the_trace_goes_on(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()  # telemetry from settings: otel_traces_exporter=none
    tracer = stack.gateway.tracer
    assert not tracer.start_span("probe").is_recording()
    await stack.chat.CreateChatCompletion(chat_request(), metadata=(("traceparent", TRACEPARENT),))
    sent = stack.fake.requests[-1].headers["traceparent"].split("-")
    assert sent[1] == TRACE_ID  # the caller's trace reaches DeepSeek
    await stack.chat.CreateChatCompletion(chat_request())
    fresh = stack.fake.requests[-1].headers["traceparent"].split("-")
    assert len(fresh[1]) == 32
    assert fresh[1] != "0" * 32


async def test_each_attempt_is_a_span_and_errors_are_marked(
    observed: tuple[Stack, Observed],
) -> None:
    stack, seen = observed
    stack.fake.push(Behavior(status=503))
    await stack.chat.CreateChatCompletion(chat_request())
    attempts = sorted(seen.finished("chat deepseek-v4-flash"), key=lambda s: s.start_time or 0)
    assert [s.attributes["seekwire.upstream.attempt"] for s in attempts] == [1, 2]
    assert attempts[0].attributes["error.type"] == "UPSTREAM_OVERLOADED"
    assert "error.type" not in (attempts[1].attributes or {})
    outcomes = {p.attributes["outcome"]: p.value for p in seen.points("seekwire.upstream.attempts")}
    assert outcomes == {"UPSTREAM_OVERLOADED": 1, "ok": 1}
    assert sum(p.value for p in seen.points("seekwire.upstream.retries")) == 1
    (server,) = seen.finished("seekwire.v1.ChatService/CreateChatCompletion")
    assert server.attributes["seekwire.upstream.attempts"] == 2


async def test_rpc_metrics_ttft_and_tokens(observed: tuple[Stack, Observed]) -> None:
    stack, seen = observed
    _ = [c async for c in stack.chat.StreamChatCompletion(chat_request())]
    await refused(stack.chat.CreateChatCompletion(chat_request(temperature=9)))
    durations = {
        (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p.count
        for p in seen.points("rpc.server.call.duration")
    }
    assert durations[("/seekwire.v1.ChatService/StreamChatCompletion", "OK")] == 1
    assert durations[("/seekwire.v1.ChatService/CreateChatCompletion", "INVALID_ARGUMENT")] == 1
    assert sum(p.count for p in seen.points("gen_ai.server.time_to_first_token")) == 1
    assert sum(p.count for p in seen.points("gen_ai.server.time_per_output_token")) == 1
    tokens = {
        p.attributes["gen_ai.token.type"]: p.sum for p in seen.points("gen_ai.client.token.usage")
    }
    assert tokens["output"] == 12  # 4 reasoning + 8 answer tokens
    assert tokens["input"] > 0
    assert sum(p.count for p in seen.points("gen_ai.client.operation.duration")) == 1
    states = {p.attributes["endpoint"]: p.value for p in seen.points("seekwire.breaker.state")}
    assert states == {"deepseek": 0}


@pytest.mark.parametrize("capture", [False, True])
async def test_prompts_and_answers_go_on_spans_only_when_opted_in(
    make_stack: StackFactory, capture: bool
) -> None:
    seen = Observed()
    stack = await make_stack(telemetry=seen.telemetry, otel_capture_content=capture)
    prompt = [{"role": "user", "content": "[fake tokens=12] the secret is thyme"}]
    answer = await stack.chat.CreateChatCompletion(chat_request(messages=prompt))
    chunks = [c async for c in stack.chat.StreamChatCompletion(chat_request(messages=prompt))]
    unary, streamed = sorted(
        seen.finished("chat deepseek-v4-flash"), key=lambda s: s.start_time or 0
    )
    if not capture:
        for span in (unary, streamed):
            assert "gen_ai.input.messages" not in (span.attributes or {})
            assert "gen_ai.output.messages" not in (span.attributes or {})
        return
    for span in (unary, streamed):
        (message,) = orjson.loads(str((span.attributes or {})["gen_ai.input.messages"]))
        assert message == {
            "role": "user",
            "parts": [{"type": "text", "content": "[fake tokens=12] the secret is thyme"}],
        }
    (said,) = orjson.loads(str((unary.attributes or {})["gen_ai.output.messages"]))
    assert said["role"] == "assistant"
    assert said["finish_reason"] == "stop"
    by_type = {part["type"]: part["content"] for part in said["parts"]}
    assert by_type["text"] == answer.choices[0].message.content
    assert by_type["reasoning"] == answer.choices[0].message.reasoning_content
    (streamed_said,) = orjson.loads(str((streamed.attributes or {})["gen_ai.output.messages"]))
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    assert {p["type"]: p["content"] for p in streamed_said["parts"]}["text"] == text
    assert text


async def test_converse_turns_are_child_spans(observed: tuple[Stack, Observed]) -> None:
    stack, seen = observed
    call, _ = await open_conversation(stack)
    await call.write(say("hi"))
    await turn(call)
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    await call.code()
    (rpc,) = seen.finished("seekwire.v1.ChatService/Converse")
    (turn_span,) = seen.finished("converse turn")
    (client,) = seen.finished("chat deepseek-v4-flash")
    assert turn_span.parent is not None
    assert turn_span.parent.span_id == rpc.context.span_id
    assert client.parent is not None
    assert client.parent.span_id == turn_span.context.span_id
    assert turn_span.attributes["seekwire.turn_id"] == "turn-1"


async def test_rate_limit_rejections_are_counted(make_stack: StackFactory, tmp_path: Any) -> None:
    from seekwire.server.auth.keys import KeyFile
    from seekwire.server.caller import Limits
    from tests.test_auth import with_key

    seen = Observed()
    keys = KeyFile(tmp_path / "keys.json", check_interval=0)
    key, _ = keys.create("svc", limits=Limits(rpm=1))
    stack = await make_stack(telemetry=seen.telemetry, auth=True, keys_file=str(keys.path))
    await stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key))
    await refused(stack.chat.CreateChatCompletion(chat_request(), metadata=with_key(key)))
    assert [
        (p.attributes["limit"], p.value) for p in seen.points("seekwire.ratelimit.rejections")
    ] == [("rpm", 1)]


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
        return str(response.read().decode())


async def test_prometheus_endpoint_and_json_logs_without_secrets(served: Served) -> None:
    from seekwire.client import AsyncClient

    prompt = "the secret recipe is 42 parts thyme"
    async with AsyncClient.connect(served.target, api_key=served.api_key) as client:
        await client.chat(prompt)
        _ = [c async for c in client.stream_chat(prompt)]
    text = await asyncio.to_thread(_scrape, served.metrics_url)
    for name in (
        "rpc_server_call_duration_seconds_bucket",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_token_usage",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "seekwire_upstream_attempts",
        "seekwire_breaker_state",
        "rpc_server_active_calls",
    ):
        assert name in text, name
    await asyncio.sleep(0.2)
    lines = [orjson.loads(line) for line in served.log if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "seekwire.access"]
    assert {line["method"] for line in access} >= {
        "/seekwire.v1.ChatService/CreateChatCompletion",
        "/seekwire.v1.ChatService/StreamChatCompletion",
    }
    unary = next(line for line in access if line["method"].endswith("CreateChatCompletion"))
    assert unary["code"] == "OK"
    assert unary["principal"] == "tests"
    assert unary["model"] == "deepseek-v4-flash"
    assert unary["output_tokens"] > 0
    assert unary["attempts"] == 1
    assert len(unary["trace_id"]) == 32
    everything = "".join(served.log) + text
    assert prompt not in everything
    assert served.api_key not in everything
    assert served.api_key.split("-")[-1] not in everything
    assert UPSTREAM_KEY not in everything
    assert "sk-seekwire-fake-upstream" not in everything


def test_message_types_are_what_the_interceptor_expects() -> None:
    assert chat_pb2.ConverseResponse.DESCRIPTOR.oneofs_by_name["event"]


async def test_otlp_metrics_reach_a_collector_over_http() -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    received: list[bytes] = []

    async def collector(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/metrics", collector)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    metrics = Metrics()
    instruments = Instruments(metrics)
    instruments.rpc_duration.record(0.001, "/m", "OK")  # on a bound: counted in that bucket
    instruments.rpc_duration.record(0.2, "/m", "OK")
    instruments.upstream_attempts.add(1, "deepseek", "ok")
    exporter = OTLPMetricExporter(endpoint=f"http://127.0.0.1:{port}/v1/metrics")
    push = OtlpPush(metrics, exporter, interval=60)
    await asyncio.to_thread(push.close)  # exports what is left before it stops
    await runner.cleanup()

    (body,) = received
    sent = ExportMetricsServiceRequest.FromString(body)
    found = {
        m.name: m for r in sent.resource_metrics for scope in r.scope_metrics for m in scope.metrics
    }
    (point,) = found["rpc.server.call.duration"].histogram.data_points
    assert point.count == 2
    bounds = list(point.explicit_bounds)
    assert point.bucket_counts[bounds.index(0.001)] == 1
    assert point.bucket_counts[bounds.index(0.25)] == 1  # 0.2 is in (0.1, 0.25]
    assert {a.key: a.value.string_value for a in point.attributes} == {
        "rpc.method": "/m",
        "rpc.grpc.status_code": "OK",
    }
    attempts = found["seekwire.upstream.attempts"].sum
    assert attempts.is_monotonic
    assert [p.as_int for p in attempts.data_points] == [1]
    assert not found["rpc.server.active_calls"].sum.is_monotonic
