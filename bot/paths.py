"""Paths as the user typed them: messages name files relative to the working folder."""

import os
from pathlib import Path


def display_path(path: Path) -> str:
    try:
        # abspath, not resolve: a link is named as the user named it (a dead one has no target to show)
        return str(Path(os.path.abspath(path)).relative_to(Path.cwd()))
    except ValueError:
        return str(path)
