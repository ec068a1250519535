"""Generated gRPC/protobuf code; regenerate with C{make protos}."""
