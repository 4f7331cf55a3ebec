"""What the API answers: a status and a JSON body."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Response:
    status: int
    body: object | None = None  # JSON-able; None: no body (204 No Content)


def fault(status: int, message: str) -> Response:
    """An error response, in the form Firecracker's API gives them."""
    return Response(status, {"fault_message": message})
