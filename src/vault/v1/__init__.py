# Generated protobuf and gRPC code for the vault.v1 API lives in this package.
# Regenerate with `make proto`; never edit the *_pb2* files by hand.
