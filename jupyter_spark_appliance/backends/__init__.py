"""Backends turn container instances into running things (processes, containers, services)."""

from .base import Backend, BackendUnavailable, Exit, Started, StartFailed, StartRequest

__all__ = ["Backend", "BackendUnavailable", "Exit", "StartFailed", "Started", "StartRequest"]
