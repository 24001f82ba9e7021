"""E-mail messages (.eml), partitioned by unstructured.

unstructured's `partition_email` reads the HTML body (headings become the heading path) or, when
there is none, the plain-text body (no headings: a plain-text line is never a heading). The title
is the Subject; sender and date go to the metadata. Attachments are not ingested (ingest them as
files of their own). Outlook .msg files are not read: no .msg could be made here to test with.
"""

from __future__ import annotations

import io
from typing import Any

from kb import Document, SourceError, SourceFile

from .._office_safety import fallback_title
from ._unstructured import element_sections, load_unstructured
from .pandoc import MAX_HTML_FACTOR

MAX_EMAIL_BODY_FACTOR = MAX_HTML_FACTOR
"""The body unstructured partitions may be this many times the text limit before it is refused."""


class EmailConnector:
    kind = "eml"
    suffixes = (".eml",)

    def extract(self, source: SourceFile) -> Document:
        if not source.data.strip():
            raise SourceError("empty file")
        return _read_email(source)


def _read_email(source: SourceFile) -> Document:
    """An e-mail message (.eml): its body, titled by its Subject; attachments are left out."""
    import email
    import email.policy

    message = email.message_from_bytes(source.data, policy=email.policy.default)
    subject, sender, date = (_header(message, name) for name in ("Subject", "From", "Date"))
    if not (subject or sender or date or _header(message, "Message-ID")):
        raise SourceError("not an e-mail message (it has no Subject, From, Date or Message-ID header)")
    body = message.get_body(preferencelist=("html", "plain"))
    html = body is not None and body.get_content_type() == "text/html"
    # Attachments are never decoded; the body is, once here and once by unstructured.
    cap = MAX_EMAIL_BODY_FACTOR * source.limits.max_chars
    if body is not None and len(body.get_payload(decode=True) or b"") > cap:
        raise SourceError(f"too much text (the message body is over {cap:,} bytes)")
    load_unstructured()
    from unstructured.partition.email import partition_email

    elements = []
    if body is not None:
        elements = partition_email(
            file=io.BytesIO(source.data),
            content_source="text/html" if html else "text/plain",
            process_attachments=False,
        )
    _, sections = element_sections(elements, source.limits.max_chars, headings=html)
    metadata = {"sender": sender, "date": _iso_date(date)}
    doc = Document(
        uri=source.uri,
        kind="eml",
        title=subject or fallback_title(source),
        sections=sections,
        metadata={k: v for k, v in metadata.items() if v},
    )
    if not sections:
        doc.empty_reason = "the message has no text body"
    return doc


def _header(message: Any, name: str) -> str:
    """One header as plain text, "" when absent or too malformed for the stdlib's parser."""
    try:
        value = message.get(name)
    except Exception:  # the stdlib's header parser still has rare crashes on hostile headers
        return ""
    return " ".join(str(value or "").split())


def _iso_date(value: str) -> str:
    """An RFC 5322 date as ISO 8601 (kept as written when it does not parse)."""
    import email.utils

    try:
        return email.utils.parsedate_to_datetime(value).isoformat() if value else ""
    except (TypeError, ValueError):
        return value
