"""Regenerate telegram_api_subset.json from the official machine-readable Bot API spec.

The emulator validates against a trimmed (no prose), committed copy so it needs no network or
shared checkout at run time; the test suite re-runs build_subset() to prove the copy is current.

Usage: python -m bot.emulators._gen_telegram_spec [path/to/api.json]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from bot.emulators.telegram import IMPLEMENTED_METHODS, SPEC_SUBSET_PATH, SPEC_TYPES

_REPO = Path(__file__).resolve().parents[2]
OFFICIAL_SPEC_CANDIDATES = (
    Path("/work/shared/specs/telegram-bot-api/api.json"),
    _REPO.parent / "shared" / "specs" / "telegram-bot-api" / "api.json",
)


def find_official_spec() -> Path | None:
    """The shared official api.json, if this checkout has one next to it."""
    return next((p for p in OFFICIAL_SPEC_CANDIDATES if p.is_file()), None)


def _trim(entry: dict[str, Any]) -> dict[str, Any]:
    """Drop the prose (descriptions) and keep what validation needs, in the original order."""
    out = {k: v for k, v in entry.items() if k != "description"}
    if "fields" in entry:
        out["fields"] = [{k: f[k] for k in ("name", "types", "required")}
                         for f in entry["fields"]]
    return out


def build_subset(api: dict[str, Any]) -> dict[str, Any]:
    """The methods and types the emulator implements or checks, descriptions stripped."""
    return {
        "version": api["version"],
        "release_date": api["release_date"],
        "source": "PaulSonOfLars/telegram-bot-api-spec api.json (MIT), trimmed by "
                  "bot/emulators/_gen_telegram_spec.py",
        "methods": {name: _trim(api["methods"][name]) for name in IMPLEMENTED_METHODS},
        "types": {name: _trim(api["types"][name]) for name in SPEC_TYPES},
    }


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else find_official_spec()
    if source is None:
        print("official api.json not found; pass its path", file=sys.stderr)
        return 2
    subset = build_subset(json.loads(source.read_text(encoding="utf-8")))
    text = json.dumps(subset, ensure_ascii=False, indent=1)
    text = re.sub(r'\{[^{}]*"required"[^{}]*\}',  # one line per field keeps diffs readable
                  lambda m: json.dumps(json.loads(m.group()), ensure_ascii=False), text)
    SPEC_SUBSET_PATH.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {SPEC_SUBSET_PATH} ({len(subset['methods'])} methods, "
          f"{len(subset['types'])} types, {subset['version']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
