"""The rate chart sent with ``/baocao``: one horizontal bar per unit, the target as a vertical line.

Made for a phone screen: 1080 px wide, large type, labels in Vietnamese number format
(``86,7%``), DejaVu Sans (shipped with matplotlib, full Vietnamese diacritics). Rendered with the
Agg backend through ``matplotlib.figure.Figure`` (no pyplot global state, safe in threads).
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # noqa: E402 - before anything touches a backend

from matplotlib import rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bot.domain.messages import percent  # noqa: E402
from bot.services.stats import Figures  # noqa: E402

WIDTH_PX = 1080
DPI = 100
MAX_BARS = 25
GREEN, ORANGE, RED, TARGET = "#2e7d32", "#ef6c00", "#c62828", "#1a237e"
DEFAULT_TITLE = "Tỷ lệ hoàn thành học tập theo đơn vị"


def _label(name: str) -> str:
    lines = textwrap.wrap(name, 22) or [name]
    return "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")


def bar_labels(figures: Sequence[Figures]) -> list[str]:
    """Each bar's unit name, shortened to two lines; names that shorten alike ("Chi bộ Trường Trung học phổ
    thông chuyên … số 3") get their unit code on a line of their own, so every bar can be told apart."""
    short = [_label(f.unit_name) for f in figures]
    alike = {label for label in short if short.count(label) > 1}
    return [_plain(f"{label}\n({f.unit_code})" if label in alike else label) for label, f in zip(short, figures)]


def _plain(text: str) -> str:
    """Text as written: matplotlib would read ``$...$`` in a unit's name as a formula (and fail on a broken one)."""
    return text.replace("$", r"\$")


def _colour(f: Figures, target: float) -> str:
    if f.target_met:
        return GREEN
    return ORANGE if f.rate >= target - 10 else RED


def rate_chart_png(
    figures: Sequence[Figures], target: float, *, title: str = DEFAULT_TITLE, subtitle: str | None = None,
    max_bars: int = MAX_BARS,
) -> bytes:
    """PNG bytes: completion rate per unit in the order given (furthest from target at the top).

    Bars are green when the target is met, orange within 10 points of it, red below. Beyond
    ``max_bars`` units the first ``max_bars`` are drawn and a note says how many are left out.
    """
    shown = list(figures)[:max_bars]
    hidden = len(figures) - len(shown)
    height_in = 2.6 + 0.8 * max(len(shown), 2) + (0.4 if hidden else 0) + (0.4 if subtitle else 0)
    with rc_context({"font.family": "DejaVu Sans", "font.size": 17}):
        fig = Figure(figsize=(WIDTH_PX / DPI, height_in), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        fig.suptitle(_plain("\n".join(textwrap.wrap(title, 44))), x=0.02, ha="left", fontsize=22, fontweight="bold")
        if subtitle:
            ax.set_title(_plain("\n".join(textwrap.wrap(subtitle, 52))), loc="left", fontsize=16, pad=14, color="#424242")
        if not shown:
            ax.text(0.5, 0.5, "Chưa có số liệu", ha="center", va="center", fontsize=20, transform=ax.transAxes)
            ax.set_axis_off()
        else:
            ys = list(range(len(shown)))
            rates = [f.rate for f in shown]
            ax.barh(ys, rates, height=0.68, color=[_colour(f, target) for f in shown])
            ax.set_yticks(ys, bar_labels(shown), fontsize=16)
            ax.invert_yaxis()  # first unit (furthest from target) at the top
            ax.set_xlim(0, 104)
            ax.set_xticks([0, 25, 50, 75, 100], ["0%", "25%", "50%", "75%", "100%"], fontsize=15)
            ax.axvline(target, color=TARGET, linestyle="--", linewidth=2.5)
            ax.text(target, -0.75, f"Mục tiêu {percent(target)}", color=TARGET, fontsize=16,
                    fontweight="bold", ha="right" if target > 60 else "left", va="bottom")
            for y, f in zip(ys, shown):
                text = f"{percent(f.rate)} ({f.finished}/{f.audience})"
                if f.rate >= 45:
                    ax.text(f.rate - 1.2, y, text, ha="right", va="center", color="white", fontsize=16,
                            fontweight="bold")
                else:
                    ax.text(f.rate + 1.2, y, text, ha="left", va="center", color="#212121", fontsize=16,
                            fontweight="bold")
            ax.set_ylim(len(shown) - 0.5, -1.1)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
            ax.grid(axis="x", alpha=0.3)
            ax.set_axisbelow(True)
            if hidden:
                ax.set_xlabel(f"… và {hidden} đơn vị khác (xem tệp Excel)", fontsize=15, loc="left")
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=DPI)
    return out.getvalue()
