"""From what cadres write (an Excel sheet, Aiken or GIFT text, a Word summary) to a document file.

The readers (``workbook``, ``moodle``) turn a file into draft questions and metadata, each problem
located by sheet/row/column or line. ``write_document`` writes ``quizzes/ID.yaml`` only when there
is no problem at all; metadata that is missing is written as an empty field, which
``hoctap content check`` then names.
"""

from __future__ import annotations

import re
import unicodedata
import zipfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from xml.etree import ElementTree

import yaml

from bot.content.validate import KINDS, LETTERS, SLUG, SLUG_HINT, DocumentSpec
from bot.text_files import decode_text

# the sheet's header, in order; A-F are the options
QUESTION_HEADER = ["Câu hỏi", "A", "B", "C", "D", "E", "F", "Đáp án", "Giải thích", "Mục"]
# metadata fields as cadres name them (the "Văn bản" sheet), and the document file's field
META_LABELS = {
    "Số hiệu": "code", "Tiêu đề": "title", "Loại văn bản": "kind", "Cơ quan ban hành": "issued_by",
    "Ngày ban hành": "issued_on", "Ghi chú": "note", "Tóm tắt": "summary", "Điểm chính": "key_points",
    "Số câu mỗi lần làm": "questions_per_attempt", "Điểm đạt (%)": "pass_score", "Số lần làm tối đa": "max_attempts",
}
QUIZ_KEYS = ("questions_per_attempt", "pass_score", "max_attempts")
KIND_NAMES = {
    "nghị quyết": "nghi-quyet", "chỉ thị": "chi-thi", "kết luận": "ket-luan", "quy định": "quy-dinh",
    "kế hoạch": "ke-hoach", "hướng dẫn": "huong-dan", "khác": "khac",
}
# words of check_question's messages that tell which column (sheet) or line (Aiken) a problem is in
ANSWER_WORD, OPTION_WORD = "đáp án", "phương án"
_SECTION = re.compile(r"^((?:Mục|Phần|Điều|Khoản)\b[^:\n]{0,80}):\s*(.*)$", re.S)


class SourceProblems(Exception):
    """Problems found in a source file; nothing was written."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems


@dataclass
class DraftQuestion:
    text: str
    options: list[str]
    answer: str  # letter
    explanation: str | None = None
    section: str | None = None  # "Mục II.4": the part of the document the explanation cites
    where: str | None = None  # where the organiser wrote it ("cau-hoi.xlsx: trang tính 'Câu hỏi', dòng 4")

    def full_explanation(self) -> str | None:
        if self.section and self.explanation:
            return f"{self.section}: {self.explanation}"
        return self.section or self.explanation


@dataclass
class Draft:
    questions: list[DraftQuestion] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # document-file field -> value
    problems: list[str] = field(default_factory=list)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def split_explanation(explanation: str | None) -> tuple[str | None, str | None]:
    """'Mục II.4 của Kế hoạch: ...' -> ('Mục II.4 của Kế hoạch', '...'), so a sheet can show both."""
    if not explanation:
        return None, None
    m = _SECTION.match(explanation)
    if not m:
        return None, explanation
    return m.group(1).strip(), (m.group(2).strip() or None)


def kind_slug(value: str) -> str:
    """'Kế hoạch' or 'ke-hoach' -> 'ke-hoach'; anything else is kept for content check to name."""
    v = nfc(value)
    return KIND_NAMES.get(v.casefold(), v)


MAX_DOCX_TEXT = 20 * 1024 * 1024  # bytes of a .docx's text part unpacked; a summary is a few pages


def read_summary(path: Path) -> str:
    """A summary from a .txt (UTF-8) or .docx file: paragraphs separated by blank lines."""
    if path.suffix.lower() == ".docx":
        not_word = SourceProblems([f"{path}: không phải tệp Word .docx; hãy lưu lại dưới dạng .docx hoặc .txt"])
        try:
            with zipfile.ZipFile(path) as z:
                size = z.getinfo("word/document.xml").file_size
                if size > MAX_DOCX_TEXT:  # a few MB of file that unpacks to gigabytes
                    raise SourceProblems([f"{path}: phần văn bản của tệp Word quá lớn (hơn {MAX_DOCX_TEXT >> 20} MB "
                                          "khi giải nén); phần tóm tắt chỉ cần vài trang: hãy chép nó sang tệp mới"])
                xml = z.read("word/document.xml")
            root = ElementTree.fromstring(xml)
        except (zipfile.BadZipFile, KeyError, OSError, ElementTree.ParseError):
            raise not_word from None
        ns = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
        paragraphs = []
        for p in root.iter(f"{ns}p"):
            text = "".join(t.text or "" for t in p.iter(f"{ns}t"))
            if text.strip():
                paragraphs.append(nfc(text))
        return "\n\n".join(paragraphs)
    try:
        return nfc(decode_text(path.read_bytes()))  # Notepad's "ANSI" is Windows-1258 on a Vietnamese Windows
    except UnicodeDecodeError as exc:
        raise SourceProblems([f"{path}: không phải văn bản UTF-8 (lỗi ở byte {exc.start}); "
                              "hãy lưu lại tệp với bảng mã UTF-8"]) from None
    except OSError as exc:
        raise SourceProblems([f"{path}: không đọc được tệp ({exc.strerror})"]) from None


def check_question(q: DraftQuestion, where: str) -> list[str]:
    """The problems of one draft question; ``where`` locates it (row or line). A problem of the answer
    names ANSWER_WORD, one of the options OPTION_WORD (and not ANSWER_WORD): readers locate them so."""
    out = []
    if not q.text:
        out.append(f"{where}: câu hỏi đang trống; hãy viết câu hỏi")
    if not 2 <= len(q.options) <= 6:
        out.append(f"{where}: có {len(q.options)} phương án; cần từ 2 đến 6 phương án")
    folded = [" ".join(o.casefold().split()) for o in q.options]
    for j, o in enumerate(folded):
        if o in folded[:j]:
            out.append(f"{where}: phương án {LETTERS[j]} trùng với phương án {LETTERS[folded.index(o)]}; "
                       "hãy viết các phương án khác nhau")
    letter = (q.answer or "").strip().upper()
    if not letter:
        out.append(f"{where}: chưa có đáp án; hãy ghi chữ cái của phương án đúng")
    elif len(letter) != 1 or letter not in LETTERS[: len(q.options)]:
        valid = ", ".join(LETTERS[: len(q.options)]) or "A, B, ..."
        out.append(f"{where}: đáp án '{q.answer}' không phải chữ cái của một phương án; hãy ghi một trong: {valid}")
    return out


def document_text(doc_id: str, draft: Draft) -> str:
    """The YAML document file, fields in the usual order; missing metadata as empty fields."""
    meta = draft.meta
    out: dict = {"id": doc_id}
    for key in ("code", "title", "note", "kind", "issued_by", "issued_on", "summary"):
        value = meta.get(key)
        if key in ("note", "issued_by", "issued_on") and not value:
            continue
        out[key] = value.isoformat() if isinstance(value, date) else (value or "")
    if meta.get("key_points"):
        out["key_points"] = list(meta["key_points"])
    quiz = {k: _number(meta[k]) for k in QUIZ_KEYS if meta.get(k) not in (None, "")}
    if quiz:
        out["quiz"] = quiz
    if meta.get("translations"):
        out["translations"] = meta["translations"]
    out["questions"] = []
    for q in draft.questions:
        item = {"text": q.text, "options": list(q.options), "answer": q.answer.strip().upper()}
        if q.full_explanation():
            item["explanation"] = q.full_explanation()
        out["questions"].append(item)
    return yaml.dump(out, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=100000)


def _number(value):
    """Whole numbers as numbers ("80%", as Excel shows a pass score typed so, is 80); anything else as
    written, for content check to name."""
    text = str(value).strip()
    text = text[:-1].strip() if text.endswith("%") and text[:-1].strip().isdigit() else text
    return int(text) if text.isdigit() else text


def write_document(content_dir: Path, doc_id: str, draft: Draft, *, force: bool = False) -> Path:
    """Write ``content_dir/ID.yaml`` if the draft has no problem; otherwise raise with every problem."""
    problems = list(draft.problems)
    if not SLUG.match(doc_id):
        problems.append(f"--id: '{doc_id}' {SLUG_HINT}")
    if not draft.questions and not problems:
        problems.append("không tìm thấy câu hỏi nào; hãy xem tệp mẫu (lệnh hoctap content template)")
    target = content_dir / f"{doc_id}.yaml"
    if target.exists() and not force:
        problems.append(f"{target} đã có; hãy thêm --force để ghi đè")
    kind = draft.meta.get("kind")
    if kind and kind not in KINDS:
        problems.append(f"không có loại văn bản '{kind}'; hãy dùng một trong: {', '.join(KINDS)} "
                        "(hoặc Nghị quyết, Kế hoạch, ...)")
    if problems:
        raise SourceProblems(problems)
    content_dir.mkdir(parents=True, exist_ok=True)
    text = document_text(doc_id, draft)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


def fill_from_loaded(draft: Draft, doc) -> None:
    """Questions only (Aiken, GIFT, a sheet without its "Văn bản" page) for a document already loaded
    (``doc``, the database row): the rest as it is now, so that loading replaces the questions alone."""
    loaded = {"code": doc.code, "title": doc.title, "kind": doc.kind, "issued_by": doc.issued_by,
              "issued_on": doc.issued_on, "note": doc.note, "summary": doc.summary, "key_points": list(doc.key_points),
              "questions_per_attempt": doc.questions_per_attempt or "all", "pass_score": doc.pass_score,
              "max_attempts": doc.max_attempts, "translations": doc.translations}
    for key, value in loaded.items():
        if draft.meta.get(key) in (None, "", []):
            draft.meta[key] = value


def draft_from_document(doc: DocumentSpec) -> Draft:
    """The other way round, for export: a checked document as a draft."""
    draft = Draft(meta={
        "code": doc.code, "title": doc.title, "kind": doc.kind, "issued_by": doc.issued_by,
        "issued_on": doc.issued_on, "note": doc.note, "summary": doc.summary, "key_points": list(doc.key_points),
        "questions_per_attempt": doc.questions_per_attempt or "all", "pass_score": doc.pass_score,
        "max_attempts": doc.max_attempts,
    })
    for q in doc.questions:
        section, explanation = split_explanation(q.explanation)
        draft.questions.append(DraftQuestion(q.text, list(q.options), LETTERS[q.answer_index], explanation, section))
    return draft


class _Dumper(yaml.SafeDumper):
    """Multi-line texts as ``|`` blocks, options on one line: a file a cadre can still read."""


def _str(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _list(dumper, value: list):
    flow = bool(value) and all(isinstance(v, str) and "\n" not in v and len(v) < 200 for v in value) and len(value) <= 6
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(list, _list)
