"""Word 97-2003 (.doc), PowerPoint 97-2003 (.ppt) and Excel 97-2003 (.xls) files, converted by LibreOffice.

LibreOffice runs headless (`soffice --headless --convert-to docx|pptx|xlsx`) with a profile of its
own in a temporary folder, so it neither touches the user's LibreOffice settings nor collides with
a LibreOffice already open; the converted file is then read by the .docx, .pptx or .xlsx connector
and cited under the original file's name. Without LibreOffice, the report says what to do instead.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from kb import Document, SourceError, SourceFile, hookimpl

TARGETS = {".doc": ("docx", "Word"), ".ppt": ("pptx", "PowerPoint"), ".xls": ("xlsx", "Excel")}
CONVERT_TIMEOUT_S = 120.0
"""LibreOffice's start takes 2-5 s here; a document that keeps it busy longer than this is refused."""
INSTALL = "apt-get install libreoffice-writer-nogui libreoffice-impress-nogui libreoffice-calc-nogui"


def soffice() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


class LegacyOfficeConnector:
    kind = "legacy-office"
    suffixes = tuple(TARGETS)

    def extract(self, source: SourceFile) -> Document:
        from kb import connector_for

        suffix = Path(source.name or str(source.path)).suffix.lower()
        target, program = TARGETS[suffix]
        if not source.data.strip():
            raise SourceError("empty file")
        command = soffice()
        if command is None:
            raise SourceError(
                f"an old {program} file ({suffix}): save it as .{target} in {program} or LibreOffice, "
                f"or install LibreOffice ({INSTALL}) and kb converts it"
            )
        timeout = min(CONVERT_TIMEOUT_S, source.limits.timeout_s or CONVERT_TIMEOUT_S)
        with tempfile.TemporaryDirectory(prefix="kb-soffice-") as tmp:
            folder = Path(tmp)
            original = folder / f"source{suffix}"
            original.write_bytes(source.data)
            try:
                proc = subprocess.run(
                    [command, f"-env:UserInstallation={(folder / 'profile').as_uri()}", "--headless", "--norestore"]
                    + ["--convert-to", target, "--outdir", str(folder / "out"), str(original)],
                    capture_output=True,
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired as exc:
                raise SourceError(f"LibreOffice took longer than {timeout:g} s to convert it") from exc
            converted = folder / "out" / f"source.{target}"
            if not converted.is_file():
                detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
                raise SourceError(
                    f"LibreOffice could not convert this {suffix} file ({detail[-1] if detail else 'no output'})"
                )
            data = converted.read_bytes()
        reader = connector_for(f"converted.{target}")
        if reader is None:
            raise SourceError(f"no reader for the converted .{target} file")
        doc = reader().extract(replace(source, data=data, name=f"{Path(source.name).stem}.{target}", path=None))
        doc.metadata["converted_by"] = f"LibreOffice ({suffix} to .{target})"
        return doc


@hookimpl
def register_connectors(register):
    register(LegacyOfficeConnector)
