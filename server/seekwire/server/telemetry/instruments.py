"""The gateway's metrics (OpenTelemetry instruments; label sets bounded: no ids, no prompts)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

# GenAI semantic-convention bucket boundaries.
_DURATION = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TOKENS = tuple(float(4**i) for i in range(14))
_RPC = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Instruments:
    def __init__(self, meter: Meter) -> None:
        self.rpc_duration = meter.create_histogram(
            "rpc.server.call.duration",
            unit="s",
            description="gRPC calls by method and status",
            explicit_bucket_boundaries_advisory=_RPC,
        )
        self.rpc_active = meter.create_up_down_counter(
            "rpc.server.active_calls", unit="{call}", description="gRPC calls in flight"
        )
        self.streams_open = meter.create_up_down_counter(
            "seekwire.streams.open", unit="{stream}", description="open streaming RPCs"
        )
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="upstream calls to DeepSeek",
            explicit_bucket_boundaries_advisory=_DURATION,
        )
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="tokens per upstream call",
            explicit_bucket_boundaries_advisory=_TOKENS,
        )
        self.time_to_first_token = meter.create_histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            description="as callers see it",
            explicit_bucket_boundaries_advisory=_TTFT,
        )
        self.time_per_output_token = meter.create_histogram(
            "gen_ai.server.time_per_output_token",
            unit="s",
            description="after the first token",
            explicit_bucket_boundaries_advisory=_TTFT,
        )
        self.upstream_attempts = meter.create_counter(
            "seekwire.upstream.attempts", unit="{attempt}", description="by endpoint and outcome"
        )
        self.upstream_retries = meter.create_counter(
            "seekwire.upstream.retries", unit="{retry}", description="attempts after the first"
        )
        self.rate_limited = meter.create_counter(
            "seekwire.ratelimit.rejections", unit="{call}", description="refused calls by limit"
        )

    def observe(
        self,
        meter: Meter,
        breakers: Callable[[], Iterable[tuple[str, int]]],
        limiter_errors: Callable[[], int],
        keys_ejected: Callable[[], int],
    ) -> None:
        """Gauges read when scraped: breaker state per endpoint (0 closed, 1 half-open, 2 open)
        and the rate-limit backend's error count."""

        def breaker_states(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(state, {"endpoint": name}) for name, state in breakers()]

        def backend_errors(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(limiter_errors())]

        meter.create_observable_gauge(
            "seekwire.breaker.state",
            callbacks=[breaker_states],
            description="0 closed, 1 half-open, 2 open",
        )

        def ejected(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(keys_ejected())]

        meter.create_observable_counter(
            "seekwire.upstream.keys_ejected",
            callbacks=[ejected],
            description="upstream keys DeepSeek rejected (401/402) and rotation dropped",
        )
        meter.create_observable_counter(
            "seekwire.limiter.backend.errors",
            callbacks=[backend_errors],
            description="rate-limit backend (Redis) errors absorbed or refused",
        )
