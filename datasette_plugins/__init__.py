"""Datasette plugins for KB files: kb_plugin (ask and search pages, links, descriptions, stored queries)."""
