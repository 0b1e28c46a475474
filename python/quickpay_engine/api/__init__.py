"""The gRPC face: protobuf <-> domain, and the one exception -> status mapping."""
