"""The web tier: Gunicorn workers that run the user's pre/post-processing and call the model server."""

from modelserve.gateway.handler import Handler, HttpError, ModelCall, Request, Response, load_handler

__all__ = ["Handler", "HttpError", "ModelCall", "Request", "Response", "load_handler"]
