"""Document files in quizzes/: check, load, import from Excel/Aiken/GIFT, template, export."""

from __future__ import annotations

import sys
from pathlib import Path

from bot.cli.base import CommandTree, UsageError, command, open_db
from bot.config import Settings
from bot.timeutil import utcnow


def _content_paths(args, settings: Settings) -> list[Path]:
    return [Path(p) for p in args.paths] if args.paths else [settings.content_dir]


def _no_document_files(args, settings: Settings) -> int:
    print(f"no document files found in {', '.join(map(str, _content_paths(args, settings)))}", file=sys.stderr)
    return 1


def _refused(result, args, settings: Settings) -> int | None:
    """Every problem, one a line, and nothing done (exit 1); or no document found; else None: go on."""
    for problem in result.problems:
        print(problem)
    if result.problems:
        print(f"{len(result.problems)} problem(s) found; nothing was loaded", file=sys.stderr)
        return 1
    if not result.documents:
        return _no_document_files(args, settings)
    return None


@command("content check")
def cmd_content_check(args, settings: Settings) -> int:
    from bot.content.validate import check_paths

    result = check_paths(_content_paths(args, settings))
    refused = _refused(result, args, settings)
    if refused is not None:
        return refused
    return _print_quality(result.documents, strict=args.strict)


def _print_quality(documents, *, strict: bool) -> int:
    """Item-writing warnings (errors with --strict), then one line per document."""
    from bot.content.quality import check_quality

    reports = [check_quality(doc) for doc in documents]
    warnings = [w for r in reports for w in r.warnings]
    for w in warnings:
        print(f"{w.file}:{w.line}: {w.field}: {'' if strict else 'warning: '}{w.message}")
    for r in reports:
        print(f"{r.document.source_file}: {r.document.id}: {r.questions} questions, "
              f"{r.longest_correct} guessable by length alone")
    if warnings and strict:
        print(f"{len(warnings)} problem(s) found (--strict)", file=sys.stderr)
        return 1
    return 0


@command("content load")
def cmd_content_load(args, settings: Settings) -> int:
    from bot.content.load import code_clashes, load_document
    from bot.content.validate import check_paths

    result = check_paths(_content_paths(args, settings))
    if not result.problems and result.documents:
        db = open_db(settings)
        with db.session() as s:
            result.problems = code_clashes(s, result.documents)
    refused = _refused(result, args, settings)
    if refused is not None:
        return refused
    now = utcnow()
    with db.session() as s:
        reports = [load_document(s, doc, now) for doc in result.documents]
    for r in reports:
        state = "new" if r.created else "updated"
        print(f"{r.document_id}: {state}, {r.questions_current} questions "
              f"({r.questions_added} added, {r.questions_retired} retired)")
    return 0


@command("content import")
def cmd_content_import(args, settings: Settings) -> int:
    from bot.content.authoring import SourceProblems, kind_slug, read_summary, write_document
    from bot.content.moodle import looks_like_gift, read_aiken, read_gift, read_text_file
    from bot.content.workbook import read_workbook

    source = Path(args.file)
    if not source.exists():
        raise UsageError(f"{source} not found")
    fmt = args.format or ("xlsx" if source.suffix.lower() in (".xlsx", ".xlsm") else
                          "gift" if source.suffix.lower() == ".gift" else None)
    if fmt is None:
        lines, _ = read_text_file(source)
        fmt = "gift" if looks_like_gift(lines) else "aiken"
    draft = {"xlsx": read_workbook, "gift": read_gift, "aiken": read_aiken}[fmt](source)
    try:
        if args.summary:
            draft.meta["summary"] = read_summary(Path(args.summary))
        for option, key in (("code", "code"), ("title", "title"), ("kind", "kind"), ("issued_by", "issued_by"),
                            ("issued_on", "issued_on"), ("note", "note")):
            value = getattr(args, option)
            if value:
                draft.meta[key] = kind_slug(value) if key == "kind" else value.strip()
        path = write_document(settings.content_dir, args.id, draft, force=args.force)
    except SourceProblems as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) found; nothing was written", file=sys.stderr)
        return 1
    print(f"{path}: {len(draft.questions)} questions from {source.name} ({fmt})")
    from bot.content.validate import check_file

    _doc, problems = check_file(path)
    for problem in problems:
        print(f"to fill in: {problem}")
    if problems:
        print(f"fill in the fields above, then run 'hoctap content check {path}'", file=sys.stderr)
    return 0


@command("content template")
def cmd_content_template(args, settings: Settings) -> int:
    from bot.content.workbook import template_bytes

    out = Path(args.out)
    out.write_bytes(template_bytes())
    print(f"template written to {out}: fill the sheet 'Câu hỏi' (and 'Văn bản'), then 'hoctap content import "
          f"{out.name} --id ID'")
    return 0


@command("content export")
def cmd_content_export(args, settings: Settings) -> int:
    from bot.content.authoring import draft_from_document
    from bot.content.validate import check_paths
    from bot.content.workbook import workbook_bytes

    result = check_paths([settings.content_dir])
    doc = next((d for d in result.documents if d.id == args.document_id), None)
    if doc is None:
        known = ", ".join(d.id for d in result.documents) or "none"
        raise UsageError(f"no checked document '{args.document_id}' in {settings.content_dir} (found: {known}); "
                         "run 'hoctap content check'")
    out = Path(args.xlsx)
    out.write_bytes(workbook_bytes(draft_from_document(doc)))
    print(f"{doc.id}: {len(doc.questions)} questions written to {out}; edit it and run "
          f"'hoctap content import {out.name} --id {doc.id} --force'")
    return 0


def register(tree: CommandTree) -> None:
    content = tree.group("content", "document files in quizzes/")
    p = tree.leaf(content, "check", "check document files and list every problem as FILE:LINE: FIELD", "content check")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: the content folder)")
    p.add_argument("--strict", action="store_true",
                   help="treat quiz-quality warnings (guessable answers, repeated questions) as errors")
    p = tree.leaf(content, "load", "check document files and load them into the database", "content load")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: the content folder)")
    p = tree.leaf(content, "import", "write quizzes/ID.yaml from an Excel question sheet, Aiken or GIFT text",
                  "content import")
    p.add_argument("file", metavar="FILE", help=".xlsx (sheet 'Câu hỏi'), Aiken .txt or GIFT .gift/.txt")
    p.add_argument("--id", required=True, metavar="ID", help="the document's id, e.g. kh-64-tu-binh-phuoc")
    p.add_argument("--format", choices=("xlsx", "aiken", "gift"), help="default: from the file")
    p.add_argument("--summary", metavar="FILE", help="the summary members read, .txt or .docx")
    p.add_argument("--code", metavar="CODE", help='the document\'s number, e.g. "64-KH/TU"')
    p.add_argument("--title", metavar="TITLE")
    p.add_argument("--kind", metavar="KIND", help="ke-hoach, nghi-quyet, ... or 'Kế hoạch', 'Nghị quyết', ...")
    p.add_argument("--issued-by", metavar="BODY")
    p.add_argument("--issued-on", metavar="YYYY-MM-DD")
    p.add_argument("--note", metavar="TEXT", help="shown to members under the title")
    p.add_argument("--force", action="store_true", help="replace an existing quizzes/ID.yaml")
    p = tree.leaf(content, "template", "write the Excel template for questions (sheets 'Câu hỏi' and 'Văn bản')",
                  "content template")
    p.add_argument("out", nargs="?", default="mau-cau-hoi.xlsx", metavar="FILE",
                   help="default: mau-cau-hoi.xlsx")
    p = tree.leaf(content, "export", "write a document's questions and metadata as the Excel sheet, to edit and re-import",
                  "content export")
    p.add_argument("document_id", metavar="ID")
    p.add_argument("--xlsx", required=True, metavar="FILE")
