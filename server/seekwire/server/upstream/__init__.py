"""The DeepSeek side of the gateway: HTTP, SSE and upstream failures. Knows nothing of gRPC."""
