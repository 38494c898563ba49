"""gRPC front-ends: TF Serving's services and the V2 inference protocol on one grpc.aio server."""
