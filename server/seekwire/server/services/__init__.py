"""One module per gRPC service: translate protobuf to upstream calls and back, nothing else."""
