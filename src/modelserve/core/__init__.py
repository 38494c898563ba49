"""The pure core: no web, gRPC or ML-framework imports, only the standard library and numpy."""
