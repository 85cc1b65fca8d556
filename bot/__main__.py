"""``python -m bot``: the ``hoctap`` command without the installed script."""

import sys

from bot.cli import main

sys.exit(main())
