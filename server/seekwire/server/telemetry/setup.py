"""Builds the OpenTelemetry providers from settings; tests pass their own (in-memory) instead."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    # Stops the Prometheus endpoint's server, when there is one.
    closers: list[Any] = field(default_factory=list)

    def shutdown(self) -> None:
        for close in self.closers:
            close()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


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
    metrics: str,
    otlp_endpoint: str,
    sampler_ratio: float,
    prometheus_listen: str,
) -> Telemetry:
    """traces: none, console, otlp-grpc or otlp-http; metrics: none, otlp-grpc or otlp-http;
    prometheus_listen: host:port of the /metrics endpoint ("" for none)."""
    resource = Resource.create({"service.name": "seekwire"})
    tracer_provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(sampler_ratio))
    )
    if traces != "none":
        tracer_provider.add_span_processor(
            BatchSpanProcessor(_span_exporter(traces, otlp_endpoint))
        )
    readers: list[MetricReader] = []
    closers: list[Any] = []
    if prometheus_listen:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        host, _, port = prometheus_listen.rpartition(":")
        readers.append(PrometheusMetricReader())
        server, _ = start_http_server(int(port), addr=host)
        closers.append(server.shutdown)
        log.info("metrics on http://%s/metrics", prometheus_listen)
    if metrics != "none":
        readers.append(PeriodicExportingMetricReader(_metric_exporter(metrics, otlp_endpoint)))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(tracer_provider, meter_provider, closers)
