"""OpenTelemetry traces and metrics, the per-RPC record, and structured logs."""
