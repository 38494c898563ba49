"""Typed, frozen configuration and the TF Serving text-protobuf file formats that produce it."""
