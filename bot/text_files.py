"""Text files organisers bring (roster CSVs, question lists): UTF-8, UTF-16 or Windows-1258.

Excel's plain "CSV" and Notepad's "ANSI" save in the Windows code page, which on a Vietnamese
Windows is Windows-1258: its tone marks are combining characters, so the text is composed (NFC)
after decoding. A file that is UTF-8 but for a damaged byte is not read as Windows-1258, which
would turn every Vietnamese letter into something like ``Nguyá»…n`` without a word.
"""

from __future__ import annotations

import re
import unicodedata

# a well-formed multi-byte UTF-8 sequence: Windows-1258 text practically never contains one
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def decode_text(data: bytes) -> str:
    """``data`` as composed (NFC) text, the byte-order mark dropped. Raises the UTF-8
    UnicodeDecodeError (its ``start`` is the first bad byte) when it is neither encoding."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return unicodedata.normalize("NFC", data.decode("utf-16"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if _UTF8_SEQUENCE.search(data):
            raise
        try:
            text = data.decode("cp1258")
        except UnicodeDecodeError:
            raise exc from None  # the UTF-8 error: it is the one the advice (save as UTF-8) is about
    return unicodedata.normalize("NFC", text)
