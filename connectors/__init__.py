"""kb's built-in connectors: one module per source kind, each registered through kb's plugin hooks.

A connector class has `kind`, `suffixes` and `extract(source: kb.SourceFile) -> kb.Document`; it
raises `kb.SourceError` with a one-line reason for a source it cannot read. Connectors never
write SQL.
"""
