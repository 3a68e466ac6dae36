"""Model sources: turn what the user typed into a ModelSpec."""

from .resolve import resolve_model, expand_references

__all__ = ["resolve_model", "expand_references"]
