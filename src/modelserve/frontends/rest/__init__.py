"""HTTP/REST front-end: TF Serving's REST API as a plain ASGI application."""
