"""Languages members read in: tags, names, and which translation of a document a member sees.

The product's own words stay Vietnamese; a document may carry translations of its title, summary
and key points (``translations:`` in its file), each with the name of whoever reviewed it. A member
reads the translation in their language when there is one, else the Vietnamese original.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VI = "vi"
LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{2,8})*$")  # BCP 47 style, lower case: vi, km, sti
NAMES = {
    "vi": "Tiếng Việt", "km": "Tiếng Khmer", "sti": "Tiếng S'tiêng", "en": "Tiếng Anh", "zh": "Tiếng Trung",
    "hmn": "Tiếng Mông", "th": "Tiếng Thái Lan", "lo": "Tiếng Lào", "cmo": "Tiếng M'nông",
}
UNREVIEWED = "bản dịch chưa được duyệt"


MAX_TAG = 35  # BCP 47's longest useful tag; a Telegram button's data (``l:<tag>``) holds 64 bytes


def is_language_tag(text: str) -> bool:
    return len(text) <= MAX_TAG and bool(LANGUAGE_TAG.match(text))


def language_name(tag: str) -> str:
    return NAMES.get(tag, f"ngôn ngữ '{tag}'")


@dataclass(frozen=True)
class Translation:
    language: str
    summary: str
    key_points: list[str]
    title: str | None
    reviewed_by: str | None

    @property
    def reviewed(self) -> bool:
        return bool(self.reviewed_by)

    def banner(self) -> str:
        """The line above a translated text: which language, and whether anyone reviewed it."""
        head = f"🌐 {language_name(self.language)}" + (f": {self.title}" if self.title else "")
        return head if self.reviewed else f"{head}\n⚠️ ({UNREVIEWED})"


def translation_for(translations: dict | None, language: str | None) -> Translation | None:
    """The translation a member with ``language`` reads, or None for the Vietnamese original."""
    if not translations or not language or language == VI:
        return None
    raw = translations.get(language)
    if not raw:
        return None
    return Translation(language, raw["summary"], list(raw.get("key_points") or []), raw.get("title"),
                       raw.get("reviewed_by"))
