"""The gateway's metrics (label sets bounded: no ids, no prompts). Names and units follow
OpenTelemetry's RPC and GenAI semantic conventions."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from seekwire.server.telemetry.metrics import Metrics

# GenAI semantic-convention bucket boundaries.
_DURATION = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TOKENS = tuple(float(4**i) for i in range(14))
_RPC = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Labels of an upstream attempt's duration and tokens.
ATTEMPT = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "server.address",
    "seekwire.upstream.endpoint",
)


class Instruments:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.rpc_duration = metrics.histogram(
            "rpc.server.call.duration",
            "s",
            "gRPC calls by method and status",
            ("rpc.method", "rpc.grpc.status_code"),
            _RPC,
        )
        self.rpc_active = metrics.counter(
            "rpc.server.active_calls",
            "{call}",
            "gRPC calls in flight",
            ("rpc.method",),
            monotonic=False,
        )
        self.streams_open = metrics.counter(
            "seekwire.streams.open", "{stream}", "open streaming RPCs", (), monotonic=False
        )
        self.operation_duration = metrics.histogram(
            "gen_ai.client.operation.duration",
            "s",
            "upstream calls to DeepSeek",
            (*ATTEMPT, "gen_ai.response.model", "error.type"),
            _DURATION,
        )
        self.token_usage = metrics.histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "tokens per upstream call",
            (*ATTEMPT, "gen_ai.response.model", "gen_ai.token.type"),
            _TOKENS,
        )
        self.time_to_first_token = metrics.histogram(
            "gen_ai.server.time_to_first_token", "s", "as callers see it", (), _TTFT
        )
        self.time_per_output_token = metrics.histogram(
            "gen_ai.server.time_per_output_token", "s", "after the first token", (), _TTFT
        )
        self.upstream_attempts = metrics.counter(
            "seekwire.upstream.attempts",
            "{attempt}",
            "by endpoint and outcome",
            ("endpoint", "outcome"),
        )
        self.upstream_retries = metrics.counter(
            "seekwire.upstream.retries", "{retry}", "attempts after the first", ("endpoint",)
        )
        self.rate_limited = metrics.counter(
            "seekwire.ratelimit.rejections", "{call}", "refused calls by limit", ("limit",)
        )

    def observe(
        self,
        breakers: Callable[[], Iterable[tuple[str, int]]],
        limiter_errors: Callable[[], int],
        keys_ejected: Callable[[], int],
    ) -> None:
        """Read when collected: breaker state per endpoint (0 closed, 1 half-open, 2 open),
        the rate-limit backend's error count, and upstream keys ejected."""
        self.metrics.observable(
            "seekwire.breaker.state",
            "1",
            "0 closed, 1 half-open, 2 open",
            ("endpoint",),
            lambda: [((name,), state) for name, state in breakers()],
            monotonic=False,
        )
        self.metrics.observable(
            "seekwire.upstream.keys_ejected",
            "{key}",
            "upstream keys DeepSeek rejected (401/402) and rotation dropped",
            (),
            lambda: [((), keys_ejected())],
            monotonic=True,
        )
        self.metrics.observable(
            "seekwire.limiter.backend.errors",
            "{error}",
            "rate-limit backend (Redis) errors absorbed or refused",
            (),
            lambda: [((), limiter_errors())],
            monotonic=True,
        )
