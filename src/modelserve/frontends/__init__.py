"""Protocol edges: decode a wire format, call the core, encode the reply, map errors to status codes."""
