"""Paths as the user typed them: messages name files relative to the working folder."""

from pathlib import Path


def display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
