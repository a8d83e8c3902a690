"""Use cases and data-kind rules. Imports nothing of grpc or the generated code."""
