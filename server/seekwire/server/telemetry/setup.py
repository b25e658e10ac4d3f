"""Builds tracing and metrics from settings; tests pass their own (in-memory spans) instead."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased

from seekwire.server.telemetry.export import OtlpPush, serve_prometheus
from seekwire.server.telemetry.metrics import Metrics


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    metrics: Metrics = field(default_factory=Metrics)
    # Stop the Prometheus endpoint's server and the OTLP push, when there are some.
    closers: list[Any] = field(default_factory=list)

    def shutdown(self) -> None:
        for close in self.closers:
            close()
        self.tracer_provider.shutdown()


def _span_exporter(kind: str, endpoint: str) -> Any:
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint or None)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=endpoint or None)


def _metric_exporter(kind: str, endpoint: str) -> Any:
    if kind == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint or None)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter(endpoint=endpoint or None)


def build(
    *,
    traces: str,
    metrics_exporter: str,
    otlp_endpoint: str,
    sampler_ratio: float,
    prometheus_listen: str,
) -> Telemetry:
    """traces: none, console, otlp-grpc or otlp-http; metrics_exporter: none, otlp-grpc or otlp-http;
    prometheus_listen: host:port of the /metrics endpoint ("" for none)."""
    resource = Resource.create({"service.name": "seekwire"})
    # With nowhere to send spans, none is recorded: trace ids still reach the logs and
    # DeepSeek's traceparent, without the cost of building spans nobody reads.
    sampler: Sampler = (
        ALWAYS_OFF if traces == "none" else ParentBased(TraceIdRatioBased(sampler_ratio))
    )
    tracer_provider = TracerProvider(resource=resource, sampler=sampler)
    if traces != "none":
        tracer_provider.add_span_processor(
            BatchSpanProcessor(_span_exporter(traces, otlp_endpoint))
        )
    metrics = Metrics(resource)
    closers: list[Any] = []
    if prometheus_listen:
        closers.append(serve_prometheus(metrics, prometheus_listen).shutdown)
    if metrics_exporter != "none":
        push = OtlpPush(metrics, _metric_exporter(metrics_exporter, otlp_endpoint))
        closers.append(push.close)
    return Telemetry(tracer_provider, metrics, closers)
