"""Opening, listing and closing study rounds from the command line; local time in, UTC stored."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from bot.services.rounds import audience_members
from bot.storage.models import Round


def open_round(cli, *extra, units="DP,HQ-TH-01", opens="2030-12-01 07:00", closes="2030-12-15 21:00"):
    return cli("rounds", "open", "kh-64-tu-binh-phuoc", "--units", units, "--opens", opens, "--closes", closes, *extra)


def test_round_audience_is_the_units_and_everything_below(cli, sample_roster, db):
    result = open_round(cli)
    assert result.code == 0, result.err
    assert result.out.strip() == (
        "round 1 opened: kh-64-tu-binh-phuoc for DP,HQ-TH-01, 01/12/2030 07:00 – 15/12/2030 21:00, target 98%"
    )
    with db.session() as s:
        rnd = s.get(Round, 1)
        assert rnd.opens_at == datetime(2030, 12, 1, 0, 0, tzinfo=timezone.utc)  # 07:00 in Vietnam
        audience = s.scalar(select(func.count()).select_from(audience_members(1).subquery()))
    # DP: 30 branch members + CB002 in DP itself; HQ-TH-01: 10
    assert audience == 41
    listed = cli("rounds", "list")
    assert listed.lines == [
        "1\tscheduled\tkh-64-tu-binh-phuoc\tDP,HQ-TH-01\t01/12/2030 07:00 – 15/12/2030 21:00\ttarget 98%\t41 members"
    ]


def test_round_can_be_closed_once(cli, sample_roster):
    open_round(cli, "--target", "95", opens="2020-01-01 07:00")
    assert "\topen\t" in cli("rounds", "list").out
    assert cli("rounds", "close", "1").out.strip() == "round 1 closed"
    assert "\tclosed\t" in cli("rounds", "list").out
    again = cli("rounds", "close", "1")
    assert (again.code, again.err.strip()) == (1, "error: đợt học tập số 1 đã kết thúc")
    missing = cli("rounds", "close", "2")
    assert (missing.code, missing.err.strip()) == (
        1, "error: không có đợt học tập số 2; xem các đợt bằng 'hoctap rounds list'")


def test_run_due_for_a_moment_still_ahead_is_refused_and_leaves_the_round_running(cli, sample_roster):
    """Catching up "next month" by mistake would close a live round for good, unannounced."""
    open_round(cli, opens="2020-01-01 07:00", closes="2030-12-20 21:00")
    ahead = cli("scheduler", "run-due", "--at", "2031-01-05 08:00")
    assert ahead.code == 1
    assert ahead.err.strip().startswith("error: --at 05/01/2031 08:00 has not come yet")
    assert "\topen\t" in cli("rounds", "list").out
    assert cli("scheduler", "run-due").code == 0  # now: the announcement, as ever


def test_a_round_extended_from_the_command_line_closes_later_and_never_earlier(cli, sample_roster):
    open_round(cli, opens="2020-01-01 07:00")
    assert cli("rounds", "extend", "1", "--closes", "20/12/2030").out.strip() == "round 1 now closes 20/12/2030 23:59"
    assert "01/01/2020 07:00 – 20/12/2030 23:59" in cli("rounds", "list").out
    absurd = cli("rounds", "extend", "1", "--closes", "31/12/9999")
    assert (absurd.code, absurd.err.strip()) == (1, "error: --closes: '31/12/9999': the year must be from 2000 to 2100")
    earlier = cli("rounds", "extend", "1", "--closes", "2030-12-19 07:00")
    assert (earlier.code, earlier.err.strip()) == (1, "error: hạn mới phải sau hạn hiện tại; hãy chọn một ngày muộn hơn")
    cli("rounds", "close", "1")
    closed = cli("rounds", "extend", "1", "--closes", "2031-01-01")
    assert (closed.code, closed.err.strip()) == (1, "error: đợt học tập số 1 đã kết thúc")


def test_a_deadline_moved_into_the_next_round_of_the_same_document_for_the_same_members_is_refused(cli, sample_roster):
    """Extending must not do what opening refuses: the members of HQ-TH-01 would have two rounds of one
    document at once, be reminded twice, and count as not done in one after finishing the other."""
    assert open_round(cli, units="DP,HQ-TH-01", opens="2020-01-01 07:00", closes="2030-12-15 21:00").code == 0
    assert open_round(cli, units="HQ-TH-01", opens="2031-01-01 07:00", closes="2031-01-15 21:00").code == 0
    into_next = cli("rounds", "extend", "1", "--closes", "2031-01-05 21:00")
    assert into_next.code == 1
    assert into_next.err.strip().startswith("error: văn bản 64-KH/TU đã có đợt học tập số 2 (")
    assert "trùng thời gian với đợt này cho cùng đảng viên; hãy chọn hạn mới trước khi đợt đó mở" in into_next.err
    assert "01/01/2020 07:00 – 15/12/2030 21:00" in cli("rounds", "list").out  # unchanged
    before_next = cli("rounds", "extend", "1", "--closes", "2030-12-31 21:00")
    assert before_next.out.strip() == "round 1 now closes 31/12/2030 21:00"


def test_bad_round_requests_say_what_to_fix(cli, sample_roster):
    cases = [
        (open_round(cli, units="DP,XX"), "error: không có đơn vị mã XX; xem các đơn vị bằng 'hoctap units list'"),
        (open_round(cli, closes="2030-11-01 07:00"), "error: hạn cuối phải sau thời điểm mở đợt; hãy kiểm tra --opens và --closes"),
        (open_round(cli, opens="mai"), "error: --opens: 'mai' is not a date and time like '2026-12-01 07:00' or '01/12/2026 07:00'"),
        (open_round(cli, closes="9999-12-31 23:59"), "error: --closes: '9999-12-31 23:59': the year must be from 2000 to 2100"),
        (open_round(cli, opens="2020-01-01 07:00", closes="2020-01-02 07:00"),
         "error: hạn cuối đã qua; hãy ghi một hạn cuối (--closes) chưa tới"),
        (open_round(cli, "--target", "120"), "error: mục tiêu 120 nằm ngoài khoảng 1-100; hãy ghi một tỷ lệ phần trăm, ví dụ 98"),
        (cli("rounds", "open", "nq-khong-co", "--units", "DP", "--opens", "2030-12-01 07:00", "--closes", "2030-12-02 07:00"),
         "error: chưa nạp văn bản 'nq-khong-co' (đã nạp: kh-64-tu-binh-phuoc, kh-83-hu-tuy-phuoc); "
         "hãy chạy 'hoctap content load' trước"),
    ]
    for result, message in cases:
        assert (result.code, result.err.strip()) == (1, message)
    assert cli("rounds", "list").lines == []


def test_dates_in_day_month_year_are_accepted(cli, sample_roster):
    result = open_round(cli, opens="01/12/2030 07:00", closes="15/12/2030 21:00")
    assert result.code == 0
    assert "01/12/2030 07:00 – 15/12/2030 21:00" in result.out


def test_a_deadline_given_as_a_date_includes_that_whole_day(cli, sample_roster):
    result = open_round(cli, opens="01/12/2030", closes="15/12/2030")
    assert "01/12/2030 00:00 – 15/12/2030 23:59" in result.out


def test_round_ids_beyond_the_database_range_get_a_one_line_error_and_exit_2(cli, sample_roster, capsys):
    import pytest

    from bot.cli import main

    open_round(cli, opens="2020-01-01 07:00")
    for args in (["report", "99999999999999999999999"], ["report", "2147483648"], ["report", "٣"],
                 ["rounds", "close", "99999999999999999999999"], ["rounds", "close", "-1"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(args)
        out, err = capsys.readouterr()
        assert exited.value.code == 2 and out == "", args
        assert err.count("\n") == 1 and err.startswith(f"error: hoctap {' '.join(args[:-1])}: argument ROUND_ID: "
                                                       "expected a number such as 12"), (args, err)
    assert "\topen\t" in cli("rounds", "list").out  # nothing was closed


def test_report_on_a_unit_the_round_does_not_cover_is_refused(cli, sample_roster):
    open_round(cli, units="HQ", opens="2020-01-01 07:00")
    refused = cli("report", "1", "--unit", "DP-TT-01")
    assert (refused.code, refused.out, refused.err.strip()) == (
        1, "", "error: round 1 does not cover unit DP-TT-01 (it covers HQ and the units below them)")
    assert cli("report", "1", "--unit", "HQ-TH-01").out.startswith("64-KH/TU — HQ-TH-01 ")
    assert cli("report", "1", "--unit", "BP").out.startswith("64-KH/TU — BP ")  # the province holds HQ


def test_output_piped_into_head_ends_quietly_without_a_traceback(cli, sample_roster, db_url, workdir):
    """`hoctap members list | head -1`: the reader closing the pipe early is not an error."""
    import os
    import subprocess
    import sys

    rows = "".join(f"X{i:05d},Đảng viên số {i},DP-TT-01,,member\n" for i in range(3000))  # far past a pipe's buffer
    (workdir / "many.csv").write_text("member_code,full_name,unit_code,phone,role\n" + rows, encoding="utf-8")
    assert cli("members", "import", "many.csv").code == 0
    env = {**os.environ, "HOCTAP_DATABASE_URL": db_url}
    done = subprocess.run(f"'{sys.executable}' -m bot.cli members list --all | head -1", shell=True, cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.count("\n") == 1 and done.stdout.count("\t") == 4
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_run_due_from_the_command_line_gives_members_their_study_links_as_the_running_scheduler_does(
        cli, sample_roster, workdir, db, monkeypatch):
    """An operator catching up with ``run-due`` sends the same announcement the scheduler would: each member's
    own link to the study page in it."""
    from bot.outbox.queue import payload_reply
    from bot.storage.models import ChatAccount, Member, OutboxMessage
    from bot.timeutil import utcnow

    (workdir / "config.yaml").write_text("web:\n  public_url: https://hoc.example.vn\n", encoding="utf-8")
    monkeypatch.setenv("HOCTAP_WEB_SECRET", "a-secret-of-thirty-two-characters")
    open_round(cli, opens="2020-01-01 07:00")
    with db.session() as s:
        member = s.scalar(select(Member).where(Member.code == "DV002"))
        s.add(ChatAccount(channel="telegram", external_id="7002", member_id=member.id, linked_at=utcnow()))
    assert cli("scheduler", "run-due").code == 0
    from bot.outbox import queue

    with db.session() as s:
        payloads = list(queue.payloads(s, list(s.scalars(select(OutboxMessage.id)))).values())
    assert payloads and all(payload_reply(p).link.url.startswith("https://hoc.example.vn/hoc/l/") for p in payloads)


@pytest.mark.postgres
def test_a_deadline_another_cadre_moved_meanwhile_is_never_moved_back_earlier(province):
    """Two cadres on the console: one has the round open (read before) when the other extends it to 20/12; the
    first one's extension to 18/12 is then refused (it would move the deadline earlier), not written over it,
    and a later one of theirs names the other's deadline as the one it replaced (the console's journal)."""
    from zoneinfo import ZoneInfo

    from bot.services.rounds import RoundError, extend_round

    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    now = datetime(2026, 12, 2, 1, 0, tzinfo=timezone.utc)
    with province.session() as first:
        seen = first.get(Round, 1)  # the first cadre's page read the round
        before = seen.closes_at
        with province.session() as second:
            extend_round(second, 1, before + timedelta(days=5), now, tz)
        with pytest.raises(RoundError, match="hạn mới phải sau hạn hiện tại"):
            extend_round(first, 1, before + timedelta(days=3), now, tz)
    with province.session() as first:
        seen = first.get(Round, 1)
        with province.session() as second:
            extend_round(second, 1, before + timedelta(days=6), now, tz)
        assert extend_round(first, 1, before + timedelta(days=7), now, tz) == before + timedelta(days=6)
    with province.session() as s:
        assert s.get(Round, 1).closes_at == before + timedelta(days=7)
