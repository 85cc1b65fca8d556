"""The playground a newcomer runs first: sample data, the real bot, a scripted member."""

from __future__ import annotations

from bot.cli import main


def test_scripted_playground_plays_a_round_on_a_fresh_database(workdir, capsys, monkeypatch):
    from tests.conftest import QUIZZES

    monkeypatch.setenv("HOCTAP_CONTENT_DIR", str(QUIZZES))
    script = workdir / "play.txt"
    script.write_text("/hoc\n1\n1\n/ketqua\n/as DV011\n/lambai\nB\n/quit\n", encoding="utf-8")
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
    script.write_text("/ketqua\n/quit\n", encoding="utf-8")
    assert main(["playground", "--script", str(script)]) == 0
    again = capsys.readouterr().out
    assert "(loaded the sample roster" not in again and "(opened round" not in again
    assert "Lần 1: đang làm dở" in again
