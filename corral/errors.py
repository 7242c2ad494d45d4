"""Errors shared across layers, each mapped to one HTTP status by the API (see ``corral/api/errors.py``)."""


class RequestError(ValueError):
    """The request cannot be served as asked (HTTP 400)."""


class InferenceError(RuntimeError):
    """The engine failed while serving (HTTP 500, or an ``{"error"}`` line once streaming has begun)."""
