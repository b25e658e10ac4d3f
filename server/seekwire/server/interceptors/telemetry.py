"""Outermost: a SERVER span per RPC (W3C trace context from the caller's metadata), its metrics,
and one structured log line, all from the RPC's CallRecord."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode, format_trace_id

from seekwire.server.caller import current_caller
from seekwire.server.convert import usage_of
from seekwire.server.interceptors.auth import HEALTH_PREFIX
from seekwire.server.interceptors.wrapping import Context, Streaming, Unary, WrappingInterceptor
from seekwire.server.telemetry.instruments import Instruments
from seekwire.server.telemetry.record import CallRecord, set_record
from seekwire.v1 import chat_pb2

access = logging.getLogger("seekwire.access")
_CODES = {code.name: code.value[0] for code in grpc.StatusCode}


def _has_token(response: Any) -> bool:
    """Whether a streamed message carries generated text, reasoning or a tool call."""
    if isinstance(response, chat_pb2.ConverseResponse):
        return response.HasField("chunk")
    for choice in getattr(response, "choices", ()):
        delta = getattr(choice, "delta", None)
        if delta is not None and (
            delta.content or delta.reasoning_content or len(delta.tool_calls)
        ):
            return True
        if getattr(choice, "text", ""):
            return True
    return False


class TelemetryInterceptor(WrappingInterceptor):
    def __init__(self, tracer: trace.Tracer, instruments: Instruments) -> None:
        self._tracer = tracer
        self._instruments = instruments

    def skips(self, method: str) -> bool:
        return method.startswith(HEALTH_PREFIX)  # Envoy asks every few seconds

    def _begin(self, context: Context, method: str, request: Any) -> tuple[trace.Span, CallRecord]:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        parent = propagate.extract(metadata)
        service, _, rpc = method[1:].partition("/")
        span = self._tracer.start_span(
            method[1:],
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc},
        )
        record = CallRecord(method, metadata.get("x-request-id") or os.urandom(8).hex())
        record.model = str(getattr(request, "model", "") or "")
        record.otel_context = trace.set_span_in_context(span, parent)
        record.trace_id = format_trace_id(span.get_span_context().trace_id)
        set_record(record)
        self._instruments.rpc_active.add(1, method)
        return span, record

    def _end(self, span: trace.Span, record: CallRecord, streaming: bool) -> None:
        now = time.perf_counter()
        duration = now - record.started
        instruments = self._instruments
        instruments.rpc_active.add(-1, record.method)
        instruments.rpc_duration.record(duration, record.method, record.code)
        span.set_attribute("rpc.grpc.status_code", _CODES.get(record.code, 2))
        if record.attempts:
            span.set_attribute("seekwire.upstream.attempts", record.attempts)
        if record.code != "OK":
            span.set_attribute("error.type", record.reason or record.code)
            span.set_status(StatusCode.ERROR, record.reason or record.code)
        span.end()
        if record.limit:
            instruments.rate_limited.add(1, record.limit)
        ttft = None
        if record.first_token is not None:
            ttft = record.first_token - record.started
            instruments.time_to_first_token.record(ttft)
            if record.output_tokens > 1:
                per_token = (now - record.first_token) / (record.output_tokens - 1)
                instruments.time_per_output_token.record(per_token)
        caller = current_caller()
        access.info(
            "rpc",
            extra={
                "fields": {
                    "method": record.method,
                    "code": record.code,
                    "reason": record.reason,
                    "principal": caller.principal,
                    "credential": caller.credential,
                    "model": record.model,
                    "input_tokens": record.input_tokens,
                    "output_tokens": record.output_tokens,
                    "duration_ms": round(duration * 1000, 3),
                    "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
                    "attempts": record.attempts,
                    "request_id": record.request_id,
                    "trace_id": record.trace_id,
                    "streaming": streaming,
                }
            },
        )

    def wrap_unary(self, behavior: Unary, method: str, request_streaming: bool) -> Unary:
        async def handle(request: Any, context: Context) -> Any:
            span, record = self._begin(context, method, None if request_streaming else request)
            try:
                response = await behavior(request, context)
                usage = usage_of(response)
                if usage is not None:
                    record.finish_usage(usage)
                    record.first_token = time.perf_counter()
                return response
            except asyncio.CancelledError:
                record.code = "CANCELLED"
                raise
            finally:
                self._end(span, record, streaming=False)

        return handle

    def wrap_streaming(
        self, behavior: Streaming, method: str, request_streaming: bool
    ) -> Streaming:
        async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
            span, record = self._begin(context, method, None if request_streaming else request)
            self._instruments.streams_open.add(1)
            try:
                async for response in behavior(request, context):
                    if record.first_token is None and _has_token(response):
                        record.first_token = time.perf_counter()
                    usage = usage_of(response)
                    if usage is not None:
                        record.finish_usage(usage)
                    yield response
            except asyncio.CancelledError:
                record.code = "CANCELLED"
                raise
            finally:
                self._instruments.streams_open.add(-1)
                self._end(span, record, streaming=True)

        return handle
