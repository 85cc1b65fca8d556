"""The web console for secretaries, cadres and admins, under ``/quantri`` (see ``bot.console.app``)."""
