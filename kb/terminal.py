"""Text from a course or a file system, made safe to print: the one renderer for everything kb shows.

A file name, a title, a heading or an error message is text someone else chose. Printed raw, an
ESC byte starts a CSI or OSC sequence that can clear the screen (ESC[2J), retitle the window
(OSC 0), write the clipboard (OSC 52) or hide what follows; a CR or LF forges a report line; a
bidi override shows "gpj.exe" as "exe.jpg". `printable()` shows every such character as a visible
escape (\\x1b, \\n, \\u202e) and leaves all other text, accents and scripts included, as it is.
Reports, progress, `kb info`, errors and answers all print through it, redirected or not.
"""

from __future__ import annotations

import unicodedata

# Characters that are not controls in Unicode's categories but still move or reorder what follows:
# the bidi embeddings, overrides and isolates, and the line and paragraph separators.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    if ch in _BIDI:
        return True
    if ch.isprintable() or ch == " ":
        return False
    # isprintable() is False for every separator but the space, which are harmless to a terminal
    # (no-break spaces, ideographic space): only controls, formats and unassigned code points count.
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def printable(text: object, *, newlines: bool = False) -> str:
    """`text` with every control, format, bidi and separator character shown as an escape.

    With `newlines`, "\\n" is kept as a line break (an answer's paragraphs); CR never is.
    Backslashes are left as they are, so ordinary Windows paths read as written.
    """
    text = str(text)
    if all(not _unsafe(ch) for ch in text):
        return text
    out = []
    for ch in text:
        if newlines and ch == "\n":
            out.append(ch)
        elif _unsafe(ch):
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)
