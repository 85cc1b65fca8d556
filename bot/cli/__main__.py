"""``python -m bot.cli``: the ``hoctap`` command without the installed script."""

import sys

from bot.cli import main

sys.exit(main())
