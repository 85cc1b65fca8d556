"""Text files organisers bring (roster CSVs, question lists): UTF-8, UTF-16 or Windows-1258.

Excel's plain "CSV" and Notepad's "ANSI" save in the Windows code page, which on a Vietnamese
Windows is Windows-1258: its tone marks are combining characters, so the text is composed (NFC)
after decoding. A file that is UTF-8 but for a damaged byte is not read as Windows-1258, which
would turn every Vietnamese letter into something like ``Nguyá»…n`` without a word.
"""

from __future__ import annotations

import re
import unicodedata

# UTF-8 of what Vietnamese text is made of: letters with a tone (Ấ, ờ, đ...), combining tone marks, and
# typographic quotes, dashes and ellipses. Windows-1258 text practically never holds these byte sequences
# (any well-formed UTF-8 pair would be too broad: a tone mark, 0xCC or 0xEC there, before ” or … is one).
_VIETNAMESE_UTF8 = re.compile(
    rb"\xc3[\x80-\xbd]|\xc4[\x82\x83\x90\x91\xa8\xa9]|\xc5[\xa8\xa9]|\xc6[\xa0\xa1\xaf\xb0]"
    rb"|\xe1[\xba\xbb][\x80-\xbf]|\xcc[\x80-\x83\x86\x89\x9b\xa3]|\xe2\x80[\x93-\xa6]")


def decode_text(data: bytes) -> str:
    """``data`` as composed (NFC) text, the byte-order mark dropped. Raises the UTF-8
    UnicodeDecodeError (its ``start`` is the first bad byte) when it is neither encoding."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return unicodedata.normalize("NFC", data.decode("utf-16"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if _VIETNAMESE_UTF8.search(data):  # UTF-8 with a damaged byte: its own error names the byte
            raise
        try:
            text = data.decode("cp1258")
        except UnicodeDecodeError:
            raise exc from None  # the UTF-8 error: it is the one the advice (save as UTF-8) is about
    return unicodedata.normalize("NFC", text)
