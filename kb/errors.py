"""Errors kb raises on purpose: each carries one sentence meant for the user."""


class KBError(Exception):
    """A user-facing error: the CLI prints its message without a traceback."""


class NotAKBFile(KBError):
    """The file is not a kb file, or is damaged."""


class SchemaTooNew(KBError):
    """The file was written by a newer kb."""


class ModelMismatch(KBError):
    """The embedding model asked for is not the one the KB was built with."""


class ExtensionUnavailable(KBError):
    """This Python's sqlite3 cannot load the vector extension."""


class SourceError(Exception):
    """A source could not be read; the message is the reason shown in the ingest report."""


def exhausted(exc: MemoryError | RecursionError) -> str:
    """The report's reason for a source whose reading ran out of memory or stack, wherever it ran."""
    return f"too large or too deeply nested to read ({type(exc).__name__})"
