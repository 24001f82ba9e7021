"""Other document formats, one module each: pandoc's (EPUB, OpenDocument text, RTF,
reStructuredText, Org), Excel workbooks (.xlsx) and e-mail (.eml).

Each format is a connector of its own, so the plugin manager's suffix table chooses the reader
(STYLE.md: a lookup, never a chain of `if suffix == ...`). unstructured, which the pandoc formats
and e-mail go through, is imported only when such a file is met, through `load_unstructured`.
"""

from kb import hookimpl

from ._unstructured import load_unstructured
from .mail import EmailConnector
from .pandoc import PandocConnector
from .workbook import WorkbookConnector

__all__ = ["EmailConnector", "PandocConnector", "WorkbookConnector", "load_unstructured"]


@hookimpl
def register_connectors(register):
    register(PandocConnector)
    register(WorkbookConnector)
    register(EmailConnector)
