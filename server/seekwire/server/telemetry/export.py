"""Where the metrics go: a Prometheus `/metrics` endpoint, and OTLP pushed on an interval."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from seekwire.server.telemetry.metrics import Histogram, Metrics

log = logging.getLogger(__name__)
_UNIT_SUFFIX = {"s": "_seconds"}  # curly-brace units ({call}, {token}) are annotations


def prometheus_name(name: str, unit: str = "") -> str:
    """OpenTelemetry's name as Prometheus spells it: gen_ai.server.time_to_first_token, unit s
    -> gen_ai_server_time_to_first_token_seconds (counters also get _total when exposed)."""
    return name.replace(".", "_") + _UNIT_SUFFIX.get(unit, "")


class PrometheusCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for instrument in self._metrics.instruments:
            name = prometheus_name(instrument.name, instrument.unit)
            labels = [prometheus_name(label) for label in instrument.labels]
            family: Any
            if isinstance(instrument, Histogram):
                family = HistogramMetricFamily(name, instrument.description, labels=labels)
                edges = [repr(b) for b in instrument.bounds] + ["+Inf"]
                for values, counts, total, _, _ in instrument.snapshot():
                    cumulative, running = [], 0
                    for edge, count in zip(edges, counts, strict=True):
                        running += count
                        cumulative.append((edge, running))
                    family.add_metric(list(values), cumulative, total)
            else:
                kind = CounterMetricFamily if instrument.monotonic else GaugeMetricFamily
                family = kind(name, instrument.description, labels=labels)
                for values, value in instrument.snapshot():
                    family.add_metric(list(values), value)
            yield family


def serve_prometheus(metrics: Metrics, listen: str) -> Any:
    """Serves the gateway's metrics and the process's (CPU, RSS, GC) on `listen`; returns the
    server, to shut down."""
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(metrics))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    host, _, port = listen.rpartition(":")
    server, _ = start_http_server(int(port), addr=host, registry=registry)
    log.info("metrics on http://%s/metrics", listen)
    return server


class OtlpPush:
    """Exports a snapshot every `interval` seconds from a thread of its own, and once more on
    close, so the last interval is not lost."""

    def __init__(self, metrics: Metrics, exporter: Any, interval: float = 60.0) -> None:
        self._metrics, self._exporter, self._interval = metrics, exporter, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-metrics", daemon=True)
        self._thread.start()

    def _export(self) -> None:
        try:
            self._exporter.export(self._metrics.collect())
        except Exception:  # an unreachable collector must not stop the gateway
            log.warning("OTLP metrics export failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._export()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._export()
        self._exporter.shutdown()
