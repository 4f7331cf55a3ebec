"""Guest images elvisor builds for its users."""

from elvisor.images.default import (
    GuestImage,
    build_default_guest,
    default_guest,
    find_default_guest,
)

__all__ = ["GuestImage", "build_default_guest", "default_guest", "find_default_guest"]
