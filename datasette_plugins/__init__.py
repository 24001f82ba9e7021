"""Datasette plugins for KB files (the browsing and ask pages arrive with the Datasette issue)."""
