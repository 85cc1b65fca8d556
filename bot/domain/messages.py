"""Every message a member reads, in Vietnamese, built as platform-neutral replies.

Pure functions of domain data: no database, no clock, no chat platform. Actions (``r:``, ``q:``,
``a:``) are the ASCII ids the channels carry back (button data, or what a typed answer maps to).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.domain.languages import VI, Translation, translation_for
from bot.domain.replies import Choice, Reply, split_text
from bot.storage.models import Attempt, AttemptQuestion, Document, Member, Round

LETTERS = "ABCDEF"
ROLE_NAMES = {"member": "Đảng viên", "secretary": "Bí thư chi bộ", "cadre": "Cán bộ", "admin": "Quản trị"}


def thousands(number: int) -> str:
    """12000 → ``12.000``: Vietnamese groups thousands with a dot."""
    return f"{number:,}".replace(",", ".")


def percent(value: float) -> str:
    """86.7 → ``86,7%``; 80.0 → ``80%`` (Vietnamese decimal comma)."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return text.replace(".", ",") + "%"


def local(dt: datetime, tz: ZoneInfo) -> str:
    return dt.astimezone(tz).strftime("%H:%M ngày %d/%m/%Y")


# -- linking -----------------------------------------------------------------------------------
HOW_TO_LINK = (
    "Đồng chí chưa liên kết tài khoản với hệ thống học tập nghị quyết.\n\n"
    "Cách liên kết:\n"
    "• Mở đường link riêng mà bí thư chi bộ gửi cho đồng chí; hoặc\n"
    "• Bấm nút «Chia sẻ số điện thoại» bên dưới (số điện thoại phải trùng với số chi bộ đã đăng ký)."
)


def not_linked() -> Reply:
    return Reply(HOW_TO_LINK, ask_contact=True)


NO_LONGER_LISTED = ("Đồng chí không còn trong danh sách sinh hoạt của hệ thống học tập nghị quyết, nên không "
                    "còn đợt học tập hay bài kiểm tra nào cho đồng chí. Nếu có nhầm lẫn, vui lòng liên hệ bí thư "
                    "chi bộ.")


def no_longer_listed() -> Reply:
    """To a chat whose member was deactivated (moved away, taken off the roster): not asked for a code."""
    return Reply(NO_LONGER_LISTED)


def link_outcome(status: str, member: Member | None) -> Reply:
    if status in ("linked", "already"):
        first = "Liên kết thành công!" if status == "linked" else "Tài khoản đã được liên kết từ trước."
        return Reply(
            f"{first} Xin chào đồng chí {member.full_name} ({member.unit.name}).\n\n"
            "Gõ /hoc để đọc tài liệu của đợt học tập, /lambai để làm bài kiểm tra, /trogiup để xem hướng dẫn."
        )
    texts = {
        "unknown": "Không tìm thấy đảng viên tương ứng. Mã liên kết hoặc số điện thoại không đúng; "
                   "đồng chí vui lòng kiểm tra lại hoặc liên hệ bí thư chi bộ.",
        "used": "Mã liên kết này đã được sử dụng. Đồng chí vui lòng xin bí thư chi bộ một mã mới.",
        "member_taken": "Đảng viên này đã liên kết với một tài khoản khác. "
                        "Nếu đồng chí đổi điện thoại hay tài khoản, vui lòng đề nghị bí thư chi bộ cấp một mã "
                        "liên kết mới dành riêng cho đồng chí.",
        "account_taken": "Tài khoản này đã liên kết với một đảng viên khác.",
        "inactive": "Đảng viên này không còn trong danh sách sinh hoạt. Vui lòng liên hệ bí thư chi bộ.",
        "for_zalo": "Mã liên kết này dành cho Zalo: đồng chí vui lòng gõ mã trong Zalo, "
                    "hoặc xin bí thư chi bộ đường dẫn liên kết Telegram.",
        "for_telegram": "Mã liên kết này dành cho Telegram: đồng chí vui lòng mở đường dẫn trên Telegram, "
                        "hoặc xin bí thư chi bộ mã liên kết Zalo (gồm 8 chữ và số).",
        "not_own": "Vì lý do bảo mật, đồng chí chỉ có thể chia sẻ số điện thoại của chính mình "
                   "(bấm nút «Chia sẻ số điện thoại» bên dưới).",
    }
    return Reply(texts[status], ask_contact=status in ("unknown", "not_own"))


# -- linking by a typed code (channels without deep links or contact sharing) ------------------
def typed_not_linked() -> Reply:
    return Reply(
        "🤖 Đây là bot tự động của hệ thống học tập nghị quyết.\n\n"
        "Đồng chí chưa liên kết tài khoản. Hãy gõ mã liên kết gồm 8 chữ và số mà bí thư chi bộ gửi "
        "cho đồng chí (ví dụ: K7PM-X3QD; không phân biệt chữ hoa, chữ thường).")


def wrong_code(tries_left: int) -> Reply:
    return Reply(
        "Mã liên kết không đúng hoặc đã hết hiệu lực. Mã gồm 8 chữ và số, ví dụ K7PM-X3QD "
        "(không có chữ O, I, L và số 0, 1). "
        f"Đồng chí kiểm tra lại mã bí thư chi bộ gửi và gõ lại (còn {tries_left} lần thử).")


def codes_paused(until: datetime, tz: ZoneInfo) -> Reply:
    return Reply(
        "Đồng chí đã nhập sai mã liên kết nhiều lần. Để bảo vệ tài khoản, vui lòng thử lại sau "
        f"{local(until, tz)}, hoặc liên hệ bí thư chi bộ để nhận mã mới.")


def group_redirect(display_name: str = "", share_link: str | None = None, *, posted_code: bool = False,
                   voided: bool = False) -> Reply:
    """In a group the bot shows nobody's results: it asks people to write to it privately. ``voided``: the
    code posted there was cancelled, since everyone in the group read it."""
    where = f" tại {share_link}" if share_link else ""
    if voided:
        return Reply("⚠️ Mã liên kết là của riêng đồng chí: mã vừa gửi trong nhóm đã bị hủy để không ai khác dùng "
                     f"được. Đồng chí vui lòng xin bí thư chi bộ một mã mới, rồi nhắn riêng cho bot{where} và gõ "
                     "mã ở đó.")
    if posted_code:
        return Reply("⚠️ Mã liên kết là của riêng đồng chí, đừng gửi trong nhóm. "
                     f"Đồng chí vui lòng nhắn riêng cho bot{where} và gõ mã ở đó.")
    name = f" {display_name}" if display_name else ""
    return Reply(f"Chào đồng chí{name}! Để bảo mật, bot không trả lời trong nhóm và không hiển thị kết quả "
                 f"học tập ở đây. Đồng chí vui lòng nhắn riêng cho bot{where} (gõ /trogiup để xem hướng dẫn).")


# -- help and hints ----------------------------------------------------------------------------
def help_text(member: Member, has_buttons: bool = True) -> Reply:
    lines = [
        f"Đồng chí {member.full_name} — {ROLE_NAMES.get(member.role, 'Đảng viên')}, {member.unit.name}.",
        "",
        "Các lệnh đồng chí dùng được:",
        "/hoc — đọc tóm tắt tài liệu của các đợt học tập đang mở",
        "/lambai — làm (hoặc làm tiếp) bài kiểm tra trắc nghiệm",
        "/ketqua — xem kết quả các lần làm bài của mình",
        "/ngonngu — chọn ngôn ngữ đọc tài liệu (khi có bản dịch)",
        "/trogiup — xem hướng dẫn này",
    ]
    if member.role in ("secretary", "cadre", "admin"):
        lines += [
            "",
            "Theo dõi đơn vị:",
            "/thongke — số liệu tham gia, điểm, tỷ lệ so với mục tiêu",
            "/chualam — danh sách đảng viên chưa hoàn thành",
            "/nhacnho — gửi nhắc nhở tới những đồng chí chưa hoàn thành",
        ]
    if member.role in ("cadre", "admin"):
        lines.append("/baocao — báo cáo Excel và biểu đồ")
    lines += [
        "",
        "Khi làm bài, bấm nút A, B, C, D (hoặc gõ chữ cái) để chọn đáp án." if has_buttons
        else "Khi làm bài, gõ chữ cái của đáp án (A, B, C, D) hoặc số thứ tự (1, 2, 3, 4).",
    ]
    return Reply("\n".join(lines))


def unknown_input(has_quiz: bool) -> Reply:
    if has_quiz:
        return Reply("Đồng chí đang làm bài kiểm tra: hãy chọn một đáp án (A, B, C…). "
                     "Gõ /lambai để xem lại câu hỏi hiện tại.")
    return Reply("Hệ thống chưa hiểu tin nhắn này. Gõ /hoc để đọc tài liệu, /lambai để làm bài kiểm tra, "
                 "/trogiup để xem hướng dẫn.")


# -- studying ----------------------------------------------------------------------------------
def no_open_rounds() -> Reply:
    return Reply("Hiện chưa có đợt học tập nào đang mở cho đơn vị của đồng chí. "
                 "Khi có đợt mới, hệ thống sẽ gửi thông báo.")


def round_list(rounds: list[Round], tz: ZoneInfo, *, for_quiz: bool) -> Reply:
    head = "Chọn đợt học tập để làm bài kiểm tra:" if for_quiz else "Các đợt học tập đang mở:"
    lines = [head, ""]
    choices = []
    for i, rnd in enumerate(rounds, start=1):
        doc = rnd.document
        lines.append(f"{i}. {doc.code} — {doc.title}{_note(doc, '   ')}\n   Hạn hoàn thành: {local(rnd.closes_at, tz)}")
        action = f"q:{rnd.id}" if for_quiz else f"r:{rnd.id}:1"
        label = f"{i}. {'Làm bài' if for_quiz else 'Đọc'} {doc.code}"
        choices.append([Choice(label, action, typed=str(i))])
    return Reply("\n".join(lines), choices)


STUDY_PAGE_HINT = ("📱 Đồng chí có thể đọc và làm bài trên trang học tập (chữ to, nút bấm lớn): "
                   "mở đường link riêng của mình bên dưới. Đường link là của riêng đồng chí, xin đừng chuyển cho người khác.")


def _note(doc: Document, indent: str = "") -> str:
    """The document's note (e.g. the period it belongs to) on a line under its title."""
    return f"\n{indent}ℹ️ {doc.note}" if doc.note else ""


@dataclass(frozen=True)
class Reading:
    """What a member reads of a document: the translation in their language where one exists."""

    summary: str
    key_points: list[str]
    translation: Translation | None


def reading_of(doc: Document, language: str | None = VI) -> Reading:
    """The summary and key points in ``language`` (the key points fall back on their own), else Vietnamese."""
    tr = translation_for(doc.translations, language)
    if tr is None:
        return Reading(doc.summary, list(doc.key_points or []), None)
    return Reading(tr.summary, tr.key_points or list(doc.key_points or []), tr)


def summary_pages(doc: Document, limit: int, language: str = VI) -> list[str]:
    """The summary in the member's language when translated (marked if unreviewed), else Vietnamese."""
    head = f"📖 {doc.code}: {doc.title}{_note(doc)}\n\n"
    reading = reading_of(doc, language)
    if reading.translation is not None:
        return split_text(f"{head}{reading.translation.banner()}\n\n{reading.summary}", limit)
    return split_text(head + doc.summary, limit)


def reading_page(rnd: Round, page: int, pages: list[str], tz: ZoneInfo, language: str = VI) -> list[Reply]:
    """Page ``page`` (1-based) of the summary; the last page is followed by key points and the quiz."""
    key_points = reading_of(rnd.document, language).key_points
    text = pages[page - 1]
    if page < len(pages):
        return [Reply(f"{text}\n\n(Trang {page}/{len(pages)})",
                      [[Choice("Tiếp ›", f"r:{rnd.id}:{page + 1}", typed="tiếp")]])]
    replies = [Reply(text if len(pages) == 1 else f"{text}\n\n(Trang {page}/{len(pages)})")]
    closing = []
    if key_points:
        closing.append("📌 Những điểm chính:\n" + "\n".join(f"• {p}" for p in key_points))
    closing.append(f"Sau khi đọc xong, đồng chí làm bài kiểm tra trước {local(rnd.closes_at, tz)}.")
    replies.append(Reply("\n\n".join(closing), [[Choice("Làm bài kiểm tra", f"q:{rnd.id}", typed="lambai")]]))
    return replies


def end_of_document(rnd: Round) -> Reply:
    """"Next" past the last page: one short line instead of the last page again."""
    return Reply(f"Đồng chí đã đọc hết tài liệu {rnd.document.code}.",
                 [[Choice("Làm bài kiểm tra", f"q:{rnd.id}", typed="lambai")]])


# -- quiz --------------------------------------------------------------------------------------
def question(attempt: Attempt, aq: AttemptQuestion, *, prefix: str = "", edit: bool = False) -> Reply:
    q = aq.question
    lines = [f"{prefix}📝 Câu {aq.position}/{attempt.question_count}", "", q.text, ""]
    for shown, original in enumerate(aq.option_order):
        lines.append(f"{LETTERS[shown]}. {q.options[original]}")
    choices = [[Choice(LETTERS[shown], f"a:{attempt.id}:{aq.position}:{shown}", typed=LETTERS[shown])
                for shown in range(len(aq.option_order))]]
    return Reply("\n".join(lines), choices, edit=edit)


def answer_action(action: str) -> tuple[int, int, int] | None:
    """(attempt id, position, shown option) of an answer's action ``a:…``, or None."""
    kind, _, rest = action.partition(":")
    parts = rest.split(":")
    if kind != "a" or len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def question_of(choices: list[list[Choice]]) -> tuple[int, int] | None:
    """(attempt id, position) of the question whose answers these choices are, or None."""
    found = next((a for row in choices for c in row if (a := answer_action(c.action))), None)
    return found[:2] if found else None


def option_out_of_range(count: int) -> Reply:
    return Reply(f"Câu này chỉ có các lựa chọn từ A đến {LETTERS[count - 1]}. Đồng chí vui lòng chọn lại.")


def recorded_prefix(position: int, letter: str) -> str:
    return f"✔️ Đã ghi nhận câu {position}: {letter}.\n\n"


def no_attempts_left(doc: Document, best: Attempt | None) -> Reply:
    best_text = f" Điểm cao nhất của đồng chí: {percent(best.score)}." if best and best.score is not None else ""
    return Reply(f"Đồng chí đã dùng hết {doc.max_attempts} lượt làm bài kiểm tra {doc.code}.{best_text}")


def result(attempt: Attempt, doc: Document, reviews, attempts_used: int, limit: int) -> list[Reply]:
    verdict = "ĐẠT ✅" if attempt.passed else "CHƯA ĐẠT ❌"
    lines = [
        f"🏁 Kết quả bài kiểm tra {doc.code}",
        f"Lần làm bài: {attempt.number}/{doc.max_attempts}",
        f"Số câu đúng: {attempt.correct_count}/{attempt.question_count} — {percent(attempt.score)}",
        f"Kết quả: {verdict} (yêu cầu từ {doc.pass_score}% trở lên)",
    ]
    wrong = [r for r in reviews if not r.correct]
    if wrong:
        lines += ["", "Các câu trả lời chưa đúng:"]
        for r in wrong:
            q = r.question
            shown_chosen = r.option_order.index(r.chosen_index)
            shown_right = r.option_order.index(q.answer_index)
            lines += [
                "",
                f"• Câu {r.position}: {q.text}",
                f"  Đồng chí chọn: {LETTERS[shown_chosen]}. {q.options[r.chosen_index]}",
                f"  Đáp án đúng: {LETTERS[shown_right]}. {q.options[q.answer_index]}",
            ]
            if q.explanation:
                lines.append(f"  Giải thích: {q.explanation}")
    else:
        lines += ["", "Đồng chí trả lời đúng tất cả các câu. Xin chúc mừng!"]
    left = doc.max_attempts - attempts_used
    lines.append("")
    if left > 0:
        lines.append(f"Đồng chí còn {left} lượt làm bài; gõ /lambai nếu muốn làm lại (tính điểm cao nhất).")
    else:
        lines.append("Đồng chí đã dùng hết lượt làm bài của đợt này.")
    return [Reply(part) for part in split_text("\n".join(lines), limit)]


def answer_notice(status: str) -> str:
    return {
        "duplicate": "Câu này đã được ghi nhận rồi.",
        "stale": "Câu hỏi này không còn hiện hành.",
        "closed": "Đợt học tập đã kết thúc, không thể ghi nhận thêm.",
        "missing": "Bài làm không còn tồn tại.",
    }[status]


def no_quiz_under_way(has_buttons: bool = True) -> str:
    """A letter typed with no quiz under way: where there are buttons (Telegram) the menu's /commands are named,
    elsewhere (Zalo) the words members type."""
    if has_buttons:
        return ("Đồng chí không có bài kiểm tra nào đang làm dở. Gõ /ketqua để xem kết quả các bài đã làm, "
                "/lambai để làm bài.")
    return ("Đồng chí không có bài kiểm tra nào đang làm dở. Gõ KẾT QUẢ để xem kết quả các bài đã làm, "
            "LÀM BÀI để làm bài.")


def current_question_is(position: int) -> str:
    return f"Câu hỏi hiện tại là câu {position}."


def answer_not_counted(typed: str, position: int) -> str:
    """A typed answer sent before question ``position`` reached the member: it is not counted."""
    return f"Đáp án «{typed}» chưa được tính vì gửi trước khi đồng chí nhận được câu {position}. " + \
        current_question_is(position)


def round_closed() -> Reply:
    return Reply("Đợt học tập này không còn mở hoặc không dành cho đơn vị của đồng chí. Gõ /hoc để xem các đợt đang mở.")


# -- results -----------------------------------------------------------------------------------
def history(rows: list[tuple[Round, list[Attempt]]], tz: ZoneInfo, limit: int, now: datetime) -> list[Reply]:
    if not rows:
        return [Reply("Đồng chí chưa làm bài kiểm tra nào. Gõ /lambai để bắt đầu.")]
    lines = ["📊 Kết quả của đồng chí:"]
    for rnd, attempts in rows:
        doc = rnd.document
        lines += ["", f"{doc.code} — {doc.title}"]
        for a in attempts:
            if a.submitted_at is None and (rnd.closed_at is not None or now >= rnd.closes_at):
                lines.append(f"  Lần {a.number}: chưa nộp (đợt học tập đã kết thúc)")
            elif a.submitted_at is None:
                lines.append(f"  Lần {a.number}: đang làm dở")
            else:
                verdict = "đạt" if a.passed else "chưa đạt"
                lines.append(f"  Lần {a.number}: {a.correct_count}/{a.question_count} câu đúng — "
                             f"{percent(a.score)} — {verdict} ({a.submitted_at.astimezone(tz).strftime('%d/%m/%Y')})")
    return [Reply(part) for part in split_text("\n".join(lines), limit)]


# -- scheduled messages ------------------------------------------------------------------------
def _translated(doc: Document, language: str) -> str:
    """A line naming the member's translation (and whether it was reviewed), when there is one."""
    tr = translation_for(doc.translations, language)
    return f"\n{tr.banner()}" if tr is not None else ""


def announcement(rnd: Round, tz: ZoneInfo, language: str = VI) -> Reply:
    doc = rnd.document
    return Reply(
        f"📢 Đợt học tập mới: {doc.code} — {doc.title}{_note(doc)}{_translated(doc, language)}\n\n"
        f"Đồng chí đọc tóm tắt tài liệu và làm bài kiểm tra trắc nghiệm trước {local(rnd.closes_at, tz)}.",
        [[Choice("📖 Đọc tóm tắt", f"r:{rnd.id}:1", typed="hoc")]],
    )


def reminder(rnd: Round, tz: ZoneInfo, language: str = VI) -> Reply:
    doc = rnd.document
    return Reply(
        f"⏰ Nhắc nhở: đồng chí chưa hoàn thành bài kiểm tra {doc.code} — {doc.title}.{_translated(doc, language)}\n"
        f"Hạn cuối: {local(rnd.closes_at, tz)}.",
        [[Choice("Làm bài kiểm tra", f"q:{rnd.id}", typed="lambai")]],
    )
