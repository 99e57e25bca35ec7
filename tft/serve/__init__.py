"""Serving: Triton model repository, embedded Triton server and gRPC client."""
