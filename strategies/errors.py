"""The one error a strategy raises while reading its options.

Strategies know nothing of HTTP; the server turns a :class:`PlanError` into a
400 in the shape of the API the request came in on, naming ``param``.
"""
from __future__ import annotations


class PlanError(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
