"""What the chat says about the web console (``/quantri``)."""

from __future__ import annotations

NO_CONSOLE = "Trang quản trị trên web chưa được bật trên máy chủ này; đồng chí liên hệ quản trị viên."
NOT_FOR_MEMBERS = ("Trang quản trị dành cho bí thư chi bộ, cán bộ phụ trách và quản trị viên. "
                   "Đồng chí học tập với /hoc, làm bài với /lambai và xem kết quả với /ketqua.")


def login_link(url: str) -> str:
    return (f"🔐 Đường dẫn vào trang quản trị (dùng một lần, trong 5 phút):\n{url}\n"
            "Không chuyển đường dẫn này cho người khác.")
