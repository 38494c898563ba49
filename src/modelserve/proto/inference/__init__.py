"""The KServe / Triton ``inference`` package (Open Inference Protocol V2 over gRPC)."""
