"""Backends turn container instances into running things (processes, containers)."""

from .base import Backend, BackendUnavailable, StartedInstance

__all__ = ["Backend", "BackendUnavailable", "StartedInstance"]
