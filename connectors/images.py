"""Images as sources (a photographed whiteboard, a scanned handout page): their text read by tesseract.

The image's size is read from its header before anything is decoded, so a decompression bomb is
refused unread; a large photo is scaled down to the pixels tesseract reads best before OCR.
"""

from __future__ import annotations

import io

from kb import Document, Locator, Section, SourceError, SourceFile, hookimpl, read_options

from . import ocr


class ImageConnector:
    kind = "image"
    suffixes = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
    options = ocr.OcrOptions
    crawled = False
    """A crawl does not fetch images: a site's logos and icons are not course text."""

    def extract(self, source: SourceFile) -> Document:
        from PIL import Image, UnidentifiedImageError

        if not source.data:
            raise SourceError("empty file")
        try:
            with Image.open(io.BytesIO(source.data)) as image:
                width, height = image.size
                if width * height > ocr.MAX_IMAGE_PIXELS:
                    raise SourceError(
                        f"image too large to read ({width:,} x {height:,} pixels; the limit is "
                        f"{ocr.MAX_IMAGE_PIXELS / 1e6:.0f} million)"
                    )
                data = source.data
                if max(width, height) > ocr.MAX_SIDE or image.format not in ("PNG", "JPEG", "TIFF"):
                    image.draft("L", (ocr.MAX_SIDE, ocr.MAX_SIDE))  # JPEG: decode at a reduced scale
                    image = image.convert("L")
                    image.thumbnail((ocr.MAX_SIDE, ocr.MAX_SIDE))
                    out = io.BytesIO()
                    image.save(out, format="PNG")
                    data = out.getvalue()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise SourceError(f"not a readable image ({exc})") from exc
        doc = Document(uri=source.uri, kind=self.kind, title=source.stem, metadata={"width": width, "height": height})
        options = read_options(ocr.OcrOptions, source.options)
        mode = options.ocr
        if mode == "never":
            doc.empty_reason = "an image, and OCR is off (--ocr never)"
            return doc
        if not ocr.available():
            doc.empty_reason = f"an image; {ocr.INSTALL_HINT}"
            return doc
        lang = options.ocr_lang
        ocr.check_language(lang)
        source.progress("OCR")
        text = ocr.ocr_image(data, lang)
        if text.strip():
            doc.sections.append(Section(text=text, locator=Locator()))
            doc.metadata["ocr_note"] = f"OCR ({lang})"
        else:
            doc.empty_reason = "OCR found no text in the image"
        return doc


@hookimpl
def register_connectors(register):
    register(ImageConnector)
