"""Layers only look down: read every module's imports (also those inside functions) from its source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[1] / "bot"

# package -> what it must never import (a module or any module below it)
FORBIDDEN = {
    # the domain: rules and texts; no use case, no delivery, no platform, no engine or session factory
    "domain": ("bot.services", "bot.channels", "bot.outbox", "bot.scheduling", "bot.web", "bot.reports",
               "bot.app", "bot.cli", "bot.emulators", "bot.storage.db"),
    # use cases: no chat platform, web surface, scheduler or process wiring
    # (nor reports: the process wiring gives ChatService its /baocao builder, see bot.reports.replies)
    "services": ("bot.channels", "bot.web", "bot.scheduling", "bot.reports", "bot.app", "bot.cli", "bot.emulators"),
    # the durable queue and its sender: below the use cases that fill it
    # the web console: a surface beside the channels, calling the same services
    "console": ("bot.channels", "bot.scheduling", "bot.app", "bot.cli", "bot.emulators"),
    "outbox": ("bot.services", "bot.channels", "bot.scheduling", "bot.web", "bot.reports", "bot.app", "bot.cli"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, relative ones resolved against its package."""
    package = ".".join(path.relative_to(BOT.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
    return found


def violations(package: str) -> list[str]:
    out = []
    for path in sorted((BOT / package).rglob("*.py")):
        for line, module in imported_modules(path):
            for banned in FORBIDDEN[package]:
                if module == banned or module.startswith(banned + "."):
                    out.append(f"{path.relative_to(BOT.parent)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(package):
    assert violations(package) == []


@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    """``write("domain/leaky.py", source)``: a module in a throwaway bot/ tree the check reads instead."""
    fake = tmp_path / "bot"
    monkeypatch.setitem(globals(), "BOT", fake)

    def write(path: str, source: str) -> None:
        (fake / path).parent.mkdir(parents=True, exist_ok=True)
        (fake / path).write_text(source, encoding="utf-8")

    return write


def test_the_check_sees_imports_inside_functions_and_relative_ones(fake_tree):
    fake_tree("domain/leaky.py", "from bot.domain.replies import Reply\n"
                                 "def f():\n    from ..services import stats\n    import bot.channels.telegram\n")
    assert violations("domain") == ["bot/domain/leaky.py:3 imports bot.services.stats",
                                    "bot/domain/leaky.py:4 imports bot.channels.telegram"]


def test_services_building_a_report_fails_the_check(fake_tree):
    fake_tree("services/oversight.py", "from bot.services import stats\n"
                                       "def report():\n    from bot.reports.xlsx import build_workbook\n")
    assert violations("services") == ["bot/services/oversight.py:3 imports bot.reports.xlsx.build_workbook"]
