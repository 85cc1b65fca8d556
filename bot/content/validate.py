"""Read and check a document file, reporting every problem as ``FILE:LINE: FIELD: message``.

Works on PyYAML's node tree rather than on loaded values so each problem knows its line. Text is
NFC-normalised here, once: decomposed Vietnamese compares unequal and wastes chat length limits.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import yaml

from bot.domain.languages import VI, is_language_tag
from bot.domain.messages import thousands
from bot.paths import display_path
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

KINDS = ("nghi-quyet", "chi-thi", "ket-luan", "quy-dinh", "ke-hoach", "huong-dan", "khac")
LETTERS = "ABCDEF"
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# Limits that fit a phone (README, "Document files"): a summary read in a few messages, a question
# and its options on one screen, a quiz that ends. Also what the database columns hold.
MAX_FILE_BYTES = 200_000
MAX_ATTEMPTS = 100  # quiz.max_attempts: more is a typo (and past what the database's integer holds)
MAX_ID_CHARS = 64
MAX_CODE_CHARS = 64
MAX_TITLE_CHARS = 200
MAX_NOTE_CHARS = 400              # shown under the title
MAX_SUMMARY_CHARS = 12_000        # about 6 Zalo messages, 3 on Telegram
MAX_SECTIONS = 20                 # parts of the summary between blank lines
MAX_SECTION_CHARS = 3_000
MAX_KEY_POINTS = 10
MAX_KEY_POINT_CHARS = 200
MAX_QUESTIONS = 100               # in one document's pool
MAX_QUESTION_TEXT_CHARS = 500    # with 6 options of 200: one Zalo message (2,000)
MAX_OPTION_CHARS = 200
MAX_EXPLANATION_CHARS = 500
# what problem messages say after a wrong id, and after a YAML syntax error
SLUG_HINT = ("không đúng dạng id; hãy chỉ dùng chữ thường không dấu, chữ số và dấu '-' "
             "(ví dụ kh-64-tu-binh-phuoc)")
_FIX_YAML = "hãy kiểm tra thụt lề, dấu nháy và dấu ':'"
# PyYAML's commonest complaints, in words an organiser reads (the others: the line and _FIX_YAML say enough)
_YAML_PROBLEMS = (
    ("mapping values are not allowed", "dấu ':' không đúng chỗ; một đoạn chữ có dấu ':' cần đặt trong dấu nháy"),
    ("could not find expected ':'", "thiếu dấu ':' sau tên trường"),
    ("cannot start any token", "có ký tự không dùng được ở đầu dòng (thường là phím Tab); hãy thụt lề bằng dấu cách"),
    ("expected <block end>", "thụt lề không đều"),
    ("found unexpected end of stream", "tệp hết giữa chừng; có thể thiếu dấu nháy đóng"),
    ("while scanning a quoted scalar", "thiếu dấu nháy đóng"),
    ("expected ',' or ']'", "danh sách trong [ ] thiếu dấu ']' đóng"),
    ("expected ',' or '}'", "nhóm trong { } thiếu dấu '}' đóng"),
)
_PARAGRAPH = re.compile(r"[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*")  # lines of text between blank lines

TOP_FIELDS = {
    "id": True, "code": True, "title": True, "note": False, "kind": True, "issued_by": False, "issued_on": False,
    "summary": True, "key_points": False, "quiz": False, "questions": True, "translations": False,
}
TRANSLATION_FIELDS = {"title": False, "summary": True, "key_points": False, "reviewed_by": False}
QUIZ_FIELDS = ("questions_per_attempt", "pass_score", "max_attempts", "shuffle_options")
QUESTION_FIELDS = {"text": True, "options": True, "answer": True, "explanation": False}


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field + ': ' if self.field else ''}{self.message}"


@dataclass
class QuestionSpec:
    text: str
    options: list[str]
    answer_index: int
    explanation: str | None
    line: int = 0


@dataclass
class DocumentSpec:
    id: str
    code: str
    title: str
    kind: str
    issued_by: str | None
    issued_on: date | None
    summary: str
    key_points: list[str]
    questions: list[QuestionSpec]
    note: str | None = None  # shown to members under the title
    translations: dict[str, dict] = field(default_factory=dict)  # language tag -> title, summary, key_points, reviewed_by
    questions_per_attempt: int | None = None  # None: all
    pass_score: int = 80
    max_attempts: int = 3
    shuffle_options: bool = True
    source_file: str = ""
    id_line: int = 1
    code_line: int = 1


@dataclass
class CheckResult:
    documents: list[DocumentSpec] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _yaml_problem(problem: str) -> str:
    """`` (<what PyYAML found, in Vietnamese>)``, or nothing for a complaint not listed."""
    said = next((vi for en, vi in _YAML_PROBLEMS if en in problem), None)
    return f" ({said})" if said else ""


_DECIMAL = re.compile(r"[-+]?\d+(?:_\d+)*")
# control characters (line breaks and tabs aside), C1 controls and lone surrogates: only escapes make them
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _pairs_joined(text: str) -> str:
    """An emoji written as two escapes (``"\\ud83d\\udcda"``, as JSON tools write one) made one character;
    a lone half stays, to be refused."""
    if not _SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return text


def check_paths(paths: list[Path]) -> CheckResult:
    """Check every ``*.yaml``/``*.yml`` under the given files and folders, across files too."""
    files: list[Path] = []
    result = CheckResult()
    for p in paths:
        if p.is_dir():
            files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        elif p.exists() or p.is_symlink():
            files.append(p)
        else:
            result.problems.append(Problem(str(p), 0, "file",
                                           "không tìm thấy; hãy chỉ ra một tệp .yaml hoặc một thư mục"))
    seen: dict[str, DocumentSpec] = {}
    codes: dict[str, DocumentSpec] = {}
    for f in files:
        doc, problems = check_file(f)
        result.problems.extend(problems)
        if doc is None:
            continue
        if doc.id in seen:
            first = seen[doc.id]
            result.problems.append(Problem(
                str(f), doc.id_line, "id",
                f"'{doc.id}' đã được dùng ở {first.source_file}:{first.id_line}; hãy đặt cho mỗi văn bản một id riêng",
            ))
            continue
        code = code_key(doc.code)
        if code in codes:
            first = codes[code]
            result.problems.append(Problem(
                str(f), doc.code_line, "code",
                f"'{doc.code}' đã là số hiệu (code) của {first.source_file}:{first.code_line}; "
                "hãy đặt cho mỗi văn bản một số hiệu riêng",
            ))
            continue
        seen[doc.id] = codes[code] = doc
        result.documents.append(doc)
    return result


def check_file(path: Path, *, named_by_id: bool = True) -> tuple[DocumentSpec | None, list[Problem]]:
    """Parse one file; the document is returned only when it has no problem. ``named_by_id``: the file's
    name must be its id (as in ``quizzes/``; not for a file uploaded in the browser)."""
    checker = _Checker(display_path(path))
    if path.is_dir():  # a folder named like a document
        return None, [Problem(checker.file, 0, "file", "là một thư mục, không phải tệp văn bản; hãy đổi tên thư mục "
                                                       "hoặc chuyển nó ra chỗ khác")]
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return None, [Problem(checker.file, 1, "file", f"dài {thousands(size)} byte; một tệp văn bản chỉ được "
                                                          f"tối đa {thousands(MAX_FILE_BYTES)} byte; hãy rút gọn phần tóm tắt")]
        data = path.read_bytes()
    except OSError as exc:  # a link to nowhere, no permission
        why = ("không tìm thấy (có lẽ là lối tắt tới một tệp đã bị xoá hoặc chuyển đi)"
               if isinstance(exc, FileNotFoundError) else "không có quyền đọc" if isinstance(exc, PermissionError)
               else "không đọc được")
        return None, [Problem(checker.file, 0, "file", f"{why}; hãy kiểm tra lại tệp")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return None, [Problem(checker.file, line, "file", f"không phải văn bản UTF-8 (lỗi ở byte {exc.start}); "
                                                          "hãy lưu lại tệp với bảng mã UTF-8")]
    doc = checker.run(text, path.stem if named_by_id else None)
    return (doc if not checker.problems else None), checker.problems


class _Checker:
    def __init__(self, filename: str):
        self.file = filename
        self.problems: list[Problem] = []

    def add(self, node: Node | None, fld: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append(Problem(self.file, line, fld, message))

    # -- scalar readers: each returns None after recording a problem -------------------------
    def text(self, node: Node, fld: str, *, allow_empty: bool = False, limit: int | None = None) -> str | None:
        if not isinstance(node, ScalarNode) or node.tag == "tag:yaml.org,2002:null":
            if isinstance(node, ScalarNode):
                if allow_empty:
                    return ""
                self.add(node, fld, "đang để trống; hãy viết nội dung")
                return None
            self.add(node, fld, f"cần nội dung dạng chữ, nhưng đang là {_show(node)}")
            return None
        value = nfc(_pairs_joined(node.value)).strip()
        bad = _UNPRINTABLE.search(value)
        if bad:  # written as an escape ("\\x07", "\\ud800"): no screen shows it, and no database stores some
            self.add(node, fld, f"có ký tự không hiển thị được (U+{ord(bad.group()):04X}); hãy xoá ký tự đó")
            return None
        if not value and not allow_empty:
            self.add(node, fld, "đang để trống; hãy viết nội dung")
            return None
        if limit is not None and len(value) > limit:
            self.add(node, fld, f"dài {thousands(len(value))} ký tự; tối đa {thousands(limit)} ký tự để vừa màn hình điện thoại; "
                                "hãy rút gọn")
            return None
        return value

    def integer(self, node: Node, fld: str) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:int" and _DECIMAL.fullmatch(node.value):
            return int(node.value)  # YAML 1.1's 0x50, 0o17 or 1:30 are ints too: not what anyone means here
        self.add(node, fld, f"cần một số nguyên, nhưng đang là {_show(node)}")
        return None

    def boolean(self, node: Node, fld: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
            return node.value.lower() in ("true", "yes", "on")
        self.add(node, fld, f"cần true hoặc false, nhưng đang là {_show(node)}")
        return None

    def mapping(self, node: Node, fld: str, allowed: dict | tuple) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode):
            self.add(node, fld, f"cần các trường dạng 'tên: giá trị', nhưng đang là {_show(node)}")
            return None
        out: dict[str, tuple[Node, Node]] = {}
        prefix = f"{fld}." if fld else ""
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in out:
                self.add(key_node, prefix + key, "xuất hiện hai lần; hãy giữ lại một")
            elif key not in allowed:
                self.add(key_node, prefix + key,
                         f"không có trường này; hãy dùng một trong các trường: {', '.join(allowed)}")
            else:
                out[key] = (key_node, value_node)
        return out

    # -- the document -------------------------------------------------------------------------
    def run(self, text: str, stem: str | None) -> DocumentSpec | None:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            what = _yaml_problem(exc.problem or "")
            self.problems.append(Problem(self.file, line, "yaml", f"lỗi cú pháp YAML{what}; {_FIX_YAML}"))
            return None
        except yaml.reader.ReaderError as exc:  # a control character typed into the file
            line = text.count("\n", 0, exc.position) + 1
            self.problems.append(Problem(self.file, line, "yaml", f"có ký tự không hiển thị được (mã {exc.character:#04x}) "
                                                                  "trên dòng này; hãy xoá ký tự đó"))
            return None
        except yaml.YAMLError:
            self.problems.append(Problem(self.file, 1, "yaml", f"lỗi cú pháp YAML; {_FIX_YAML}"))
            return None
        except RecursionError:  # thousands of nested brackets: no document nests so
            self.problems.append(Problem(self.file, 1, "yaml", "các dấu ngoặc [ ] hoặc { } lồng nhau quá sâu; "
                                                               f"{_FIX_YAML}"))
            return None
        if root is None:
            self.problems.append(Problem(self.file, 1, "file", "đang trống; hãy viết nội dung văn bản "
                                                               "(xem mẫu quizzes/kh-64-tu-binh-phuoc.yaml)"))
            return None
        if not isinstance(root, MappingNode):  # a list or a lone value: say it is the whole file, not a field
            self.add(root, "file", f"cả tệp đang là {_show(root)}, nhưng một văn bản là các trường dạng 'tên: giá trị' "
                                   "(id, code, title, summary, questions…) ở đầu dòng "
                                   "(xem mẫu quizzes/kh-64-tu-binh-phuoc.yaml)")
            return None
        fields = self.mapping(root, "", TOP_FIELDS)
        for name, required in TOP_FIELDS.items():
            if required and name not in fields:
                self.add(root, name, "thiếu; hãy thêm trường này")

        def get(name):
            return fields[name][1] if name in fields else None

        doc_id = self.text(get("id"), "id", limit=MAX_ID_CHARS) if get("id") is not None else None
        if doc_id is not None:
            if not SLUG.match(doc_id):
                self.add(get("id"), "id", f"'{doc_id}' {SLUG_HINT}")
            elif stem is not None and doc_id != stem:
                self.add(get("id"), "id", f"'{doc_id}' khác tên tệp '{stem}'; hãy đặt id và tên tệp giống nhau")
        limits = {"code": MAX_CODE_CHARS, "title": MAX_TITLE_CHARS, "summary": MAX_SUMMARY_CHARS}
        values = {n: self.text(get(n), n, limit=limit) for n, limit in limits.items() if get(n) is not None}
        if values.get("summary"):
            self._sections(get("summary"))
        issued_by = (self.text(get("issued_by"), "issued_by", limit=MAX_TITLE_CHARS)
                     if get("issued_by") is not None else None)
        note = self.text(get("note"), "note", limit=MAX_NOTE_CHARS) if get("note") is not None else None
        kind = self.text(get("kind"), "kind") if get("kind") is not None else None
        if kind is not None and kind not in KINDS:
            self.add(get("kind"), "kind", f"không có loại văn bản '{kind}'; hãy dùng một trong: {', '.join(KINDS)}")
        issued_on = self._date(get("issued_on")) if get("issued_on") is not None else None
        key_points = self._key_points(get("key_points")) if get("key_points") is not None else []
        quiz = self._quiz(get("quiz")) if get("quiz") is not None else {}
        questions = self._questions(get("questions")) if get("questions") is not None else []
        translations = self._translations(get("translations")) if get("translations") is not None else {}

        per = quiz.get("questions_per_attempt")
        pool = len(get("questions").value) if isinstance(get("questions"), SequenceNode) else 0
        if per is not None and pool and per > pool:
            node = fields["quiz"][1]
            self.add(_child(node, "questions_per_attempt"), "quiz.questions_per_attempt",
                     f"{per} nhiều hơn số câu hỏi hiện có ({pool} câu); hãy giảm số này hoặc thêm câu hỏi")
        if self.problems:
            return None
        return DocumentSpec(
            id=doc_id, code=values["code"], title=values["title"], kind=kind, issued_by=issued_by,
            issued_on=issued_on, summary=values["summary"], key_points=key_points, questions=questions, note=note,
            translations=translations,
            questions_per_attempt=per, pass_score=quiz.get("pass_score", 80),
            max_attempts=quiz.get("max_attempts", 3), shuffle_options=quiz.get("shuffle_options", True),
            source_file=self.file, id_line=get("id").start_mark.line + 1, code_line=get("code").start_mark.line + 1,
        )

    def _sections(self, node: ScalarNode) -> None:
        """The summary's parts between blank lines: each at most a long phone screen, not too many."""
        first = node.start_mark.line + 1 + (1 if node.style in ("|", ">") else 0)  # block text starts below
        sections = list(_PARAGRAPH.finditer(node.value))
        if len(sections) > MAX_SECTIONS:
            self.add(node, "summary", f"có {len(sections)} đoạn (các phần cách nhau bằng dòng trống); "
                                      f"tối đa {MAX_SECTIONS} đoạn; hãy gộp hoặc rút gọn")
        for i, m in enumerate(sections, start=1):
            length = len(nfc(m.group()).strip())
            if length > MAX_SECTION_CHARS:
                line = first + node.value.count("\n", 0, m.start())
                self.problems.append(Problem(
                    self.file, line, f"summary (đoạn {i})",
                    f"dài {thousands(length)} ký tự; mỗi đoạn tối đa {thousands(MAX_SECTION_CHARS)} ký tự; hãy tách ra bằng một dòng trống"))

    def _date(self, node: Node) -> date | None:
        if isinstance(node, ScalarNode) and node.tag != "tag:yaml.org,2002:null":
            raw = node.value.strip()
            try:
                return date.fromisoformat(raw)
            except ValueError:
                pass
            try:
                d, m, y = raw.split("/")
                return date(int(y), int(m), int(d))
            except ValueError:
                pass
        self.add(node, "issued_on", f"{_show(node)} không phải là ngày hợp lệ; hãy viết theo dạng 2022-02-15")
        return None

    def _key_points(self, node: Node, fld: str = "key_points") -> list[str]:
        if not isinstance(node, SequenceNode):
            self.add(node, fld, f"cần một danh sách các ý ngắn, nhưng đang là {_show(node)}")
            return []
        if len(node.value) > MAX_KEY_POINTS:
            self.add(node, fld, f"có {len(node.value)} ý; tối đa {MAX_KEY_POINTS} ý; hãy gộp hoặc bỏ bớt")
        return [t for i, item in enumerate(node.value)
                if (t := self.text(item, f"{fld}[{i + 1}]", limit=MAX_KEY_POINT_CHARS))]

    def _translations(self, node: Node) -> dict[str, dict]:
        """``translations: {km: {summary: ..., key_points: [...], title: ..., reviewed_by: ...}}``."""
        if not isinstance(node, MappingNode):
            self.add(node, "translations", f"cần các ngôn ngữ (ví dụ km:), mỗi ngôn ngữ có một summary, "
                                           f"nhưng đang là {_show(node)}")
            return {}
        out: dict[str, dict] = {}
        for key_node, value_node in node.value:
            tag = str(key_node.value).strip()
            fld = f"translations.{tag}"
            if not is_language_tag(tag) or tag == VI:
                self.add(key_node, fld, f"'{tag}' không phải mã của một ngôn ngữ khác tiếng Việt (vi); "
                                        "hãy viết, ví dụ: km (tiếng Khmer), sti (tiếng S'tiêng), en (tiếng Anh)")
                continue
            if tag in out:
                self.add(key_node, fld, "xuất hiện hai lần; hãy giữ lại một")
                continue
            fields = self.mapping(value_node, fld, TRANSLATION_FIELDS)
            if fields is None:
                continue
            if "summary" not in fields:
                self.add(value_node, f"{fld}.summary", "thiếu; hãy thêm bản tóm tắt đã dịch")
                continue
            item = {"summary": self.text(fields["summary"][1], f"{fld}.summary", limit=MAX_SUMMARY_CHARS)}
            if "title" in fields:
                item["title"] = self.text(fields["title"][1], f"{fld}.title", limit=MAX_TITLE_CHARS)
            if "key_points" in fields:
                item["key_points"] = self._key_points(fields["key_points"][1], f"{fld}.key_points")
            if "reviewed_by" in fields:
                item["reviewed_by"] = self.text(fields["reviewed_by"][1], f"{fld}.reviewed_by", allow_empty=True) or None
            out[tag] = item
        return out

    def _quiz(self, node: Node) -> dict:
        fields = self.mapping(node, "quiz", QUIZ_FIELDS)
        if fields is None:
            return {}
        out: dict = {}
        if "questions_per_attempt" in fields:
            n = fields["questions_per_attempt"][1]
            if isinstance(n, ScalarNode) and n.value.strip().lower() == "all":
                out["questions_per_attempt"] = None
            else:
                v = self.integer(n, "quiz.questions_per_attempt")
                if v is not None and v < 1:
                    self.add(n, "quiz.questions_per_attempt", f"{v} quá nhỏ; hãy ghi 'all' hoặc một số từ 1 trở lên")
                elif v is not None:
                    out["questions_per_attempt"] = v
        if "pass_score" in fields:
            n = fields["pass_score"][1]
            v = self.integer(n, "quiz.pass_score")
            if v is not None and not 0 <= v <= 100:
                self.add(n, "quiz.pass_score", f"{v} nằm ngoài khoảng 0-100; hãy ghi tỷ lệ phần trăm")
            elif v is not None:
                out["pass_score"] = v
        if "max_attempts" in fields:
            n = fields["max_attempts"][1]
            v = self.integer(n, "quiz.max_attempts")
            if v is not None and v < 1:
                self.add(n, "quiz.max_attempts", f"{v} quá nhỏ; hãy cho làm ít nhất 1 lần")
            elif v is not None and v > MAX_ATTEMPTS:
                self.add(n, "quiz.max_attempts", f"{v} quá lớn; tối đa {MAX_ATTEMPTS} lần")
            elif v is not None:
                out["max_attempts"] = v
        if "shuffle_options" in fields:
            v = self.boolean(fields["shuffle_options"][1], "quiz.shuffle_options")
            if v is not None:
                out["shuffle_options"] = v
        return out

    def _questions(self, node: Node) -> list[QuestionSpec]:
        if not isinstance(node, SequenceNode):
            self.add(node, "questions", f"cần một danh sách câu hỏi, nhưng đang là {_show(node)}")
            return []
        if not node.value:
            self.add(node, "questions", "đang trống; hãy thêm ít nhất một câu hỏi")
        if len(node.value) > MAX_QUESTIONS:
            self.add(node, "questions", f"có {len(node.value)} câu hỏi; mỗi văn bản tối đa {MAX_QUESTIONS} câu; "
                                        "hãy bớt câu hỏi")
        out = []
        asked: dict[str, tuple[int, int]] = {}  # normalised text -> (question number, line)
        for i, qnode in enumerate(node.value, start=1):
            q = self._question(qnode, f"questions[{i}]")
            if q is None:
                continue
            number, line = asked.setdefault(_normalised(q.text), (i, q.line))
            if number != i:
                self.add(_child(qnode, "text"), f"questions[{i}].text",
                         f"trùng với questions[{number}] (dòng {line}); mỗi câu chỉ hỏi một lần, "
                         "hãy bỏ hoặc sửa câu này")
                continue
            out.append(q)
        return out

    def _question(self, node: Node, fld: str) -> QuestionSpec | None:
        fields = self.mapping(node, fld, QUESTION_FIELDS)
        if fields is None:
            return None
        before = len(self.problems)
        for name, required in QUESTION_FIELDS.items():
            if required and name not in fields:
                self.add(node, f"{fld}.{name}", "thiếu; hãy thêm trường này")
        text = self.text(fields["text"][1], f"{fld}.text", limit=MAX_QUESTION_TEXT_CHARS) if "text" in fields else None
        explanation = None
        if "explanation" in fields:
            explanation = self.text(fields["explanation"][1], f"{fld}.explanation", allow_empty=True,
                                    limit=MAX_EXPLANATION_CHARS) or None
        options: list[str] = []
        if "options" in fields:
            onode = fields["options"][1]
            if not isinstance(onode, SequenceNode):
                self.add(onode, f"{fld}.options", f"cần một danh sách từ 2 đến 6 phương án, nhưng đang là {_show(onode)}")
            else:
                seen: dict[str, int] = {}
                for j, item in enumerate(onode.value):
                    opt = self.text(item, f"{fld}.options[{LETTERS[j] if j < 6 else j + 1}]", limit=MAX_OPTION_CHARS)
                    if opt is None:
                        continue
                    norm = " ".join(opt.casefold().split())
                    if norm in seen:
                        self.add(item, f"{fld}.options", f"phương án {_letter(j)} trùng với phương án {_letter(seen[norm])}; hãy viết các phương án khác nhau")
                    seen.setdefault(norm, j)
                    options.append(opt)
                if not 2 <= len(onode.value) <= 6:
                    self.add(onode, f"{fld}.options", f"có {len(onode.value)} phương án; cần từ 2 đến 6 phương án")
        answer_index = None
        if "answer" in fields:
            anode = fields["answer"][1]
            raw = anode.value.strip().upper() if isinstance(anode, ScalarNode) else None
            count = len(fields["options"][1].value) if "options" in fields and isinstance(fields["options"][1], SequenceNode) else 0
            valid = LETTERS[: max(count, 0)]
            if not raw or len(raw) != 1 or raw not in LETTERS:
                self.add(anode, f"{fld}.answer", f"{_show(anode)} không phải chữ cái của một phương án; hãy ghi một trong: {', '.join(valid) or 'A, B, ...'}")
            elif count and raw not in valid:
                self.add(anode, f"{fld}.answer", f"{raw} nằm ngoài {count} phương án đã cho; hãy ghi một trong: {', '.join(valid)}")
            else:
                answer_index = LETTERS.index(raw)
        if len(self.problems) > before or text is None or answer_index is None:
            return None
        return QuestionSpec(text=text, options=options, answer_index=answer_index,
                            explanation=explanation, line=node.start_mark.line + 1)


def code_key(code: str) -> str:
    """Two codes that differ only in case or spacing are one code."""
    return " ".join(code.casefold().split())


def _normalised(text: str) -> str:
    """What makes two question texts the same question: case, spacing and the closing mark do not count."""
    return " ".join(text.casefold().split()).rstrip(" ?.:!…")


def _letter(i: int) -> str:
    return LETTERS[i] if i < len(LETTERS) else str(i + 1)


def _child(mapping: Node, key: str) -> Node:
    for k, v in mapping.value:
        if k.value == key:
            return v
    return mapping


def _kind(node: Node) -> str:
    """What a node is, in the words problem messages show (Vietnamese)."""
    return "danh sách" if isinstance(node, SequenceNode) else "nhóm trường" if isinstance(node, MappingNode) else "giá trị"


def _show(node: Node) -> str:
    if isinstance(node, ScalarNode):
        return f"'{node.value}'" if node.value != "" else "giá trị trống"
    return f"một {_kind(node)}"
