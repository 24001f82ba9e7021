"""Placeholder: filled in by the connector work of issues 4 and 5."""
