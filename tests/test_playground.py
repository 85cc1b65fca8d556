"""The playground a newcomer runs first: sample data, the real bot, a scripted member."""

from __future__ import annotations

from bot.cli import main


def test_scripted_playground_plays_a_round_on_a_fresh_database(workdir, capsys, monkeypatch):
    from tests.conftest import QUIZZES

    monkeypatch.setenv("HOCTAP_CONTENT_DIR", str(QUIZZES))
    script = workdir / "play.txt"
    script.write_text("/hoc\n1\n1\n1\n1\n/ketqua\n/as DV011\n/lambai\nB\n/quit\n", encoding="utf-8")
    assert main(["playground", "--script", str(script)]) == 0
    out = capsys.readouterr().out
    assert "(loaded the sample roster" in out and "(opened round 1" in out
    assert "--- you are Đinh Văn Sơn (DV002, member)" in out  # the first ordinary member
    assert "📖 64-KH/TU" in out and "[1] Làm bài kiểm tra" in out
    assert "📝 Câu 1/10" in out  # pressed "Làm bài kiểm tra"
    assert "Lần 1: đang làm dở" in out
    assert "--- you are" in out.split("/as DV011")[1]
    assert "✔️ Đã ghi nhận câu 1: B." in out
    # a second run on the same database continues (no re-seeding, same round)
    script.write_text("/hoc\n²\n/ketqua\n/quit\n", encoding="utf-8")  # "²" is typed text, not button 2
    assert main(["playground", "--script", str(script)]) == 0
    again = capsys.readouterr().out
    assert "(loaded the sample roster" not in again and "(opened round" not in again
    assert "Lần 1: đang làm dở" in again


def test_a_cadres_report_shows_its_workbook_and_chart_in_the_terminal(workdir, capsys, monkeypatch):
    from tests.conftest import QUIZZES

    monkeypatch.setenv("HOCTAP_CONTENT_DIR", str(QUIZZES))
    script = workdir / "play.txt"
    script.write_text("/as CB002\n/baocao\n/quit\n", encoding="utf-8")
    assert main(["playground", "--script", str(script)]) == 0
    out = capsys.readouterr().out.split("/baocao")[1]
    assert "[tệp: " in out and ".xlsx]" in out and "[ảnh]" in out


def test_playground_shows_what_each_person_receives_at_a_scheduled_moment(workdir, capsys, monkeypatch):
    from datetime import timedelta

    from bot.timeutil import utcnow
    from tests.conftest import QUIZZES

    monkeypatch.setenv("HOCTAP_CONTENT_DIR", str(QUIZZES))
    # the playground opens a 14-day round now; the last reminder is the day before it closes, 08:00
    day_before = (utcnow() + timedelta(hours=7) + timedelta(days=13)).strftime("%Y-%m-%d 08:00")
    assert main(["playground", "--at", day_before]) == 0
    out = capsys.readouterr().out
    member = out.split("--- Đinh Văn Sơn (DV002, đảng viên)")[1].split("---")[0]
    assert "📢 Đợt học tập mới: 64-KH/TU" in member  # the announcement is caught up once
    assert "⏰ Nhắc nhở: đồng chí chưa hoàn thành bài kiểm tra 64-KH/TU" in member
    assert f"remind:1:{day_before[:10]}: 3 message(s)" in out


def test_playground_web_serves_the_study_page_and_prints_the_members_link_first(workdir):
    """``hoctap playground --web``: the link is the first line starting with http://; it opens the
    member's pages on 127.0.0.1 while the chat goes on; /hoc in the chat offers a link too."""
    import os
    import subprocess
    import sys

    import httpx

    from tests.conftest import QUIZZES

    env = {**os.environ, "HOCTAP_CONTENT_DIR": str(QUIZZES), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "playground", "--web", "--channel", "zalo"],
                            cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(line.startswith("http://") for line in lines):
            line = proc.stdout.readline()
            assert line, "the playground ended without printing a link:\n" + "".join(lines)
            lines.append(line)
        url = lines[-1].strip()
        assert url.startswith("http://127.0.0.1:") and "/hoc/l/" in url
        page = httpx.get(url, follow_redirects=True, timeout=10)
        assert page.status_code == 200 and "Chào đồng chí Đinh Văn Sơn" in page.text
        out, _ = proc.communicate("hoc\n/quit\n", timeout=60)
        assert "Trang học tập của đồng chí: http://127.0.0.1:" in out
    finally:
        if proc.poll() is None:
            proc.kill()
