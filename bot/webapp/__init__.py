"""The study pages: members read and take the quiz on a phone web page opened with one tap from the chat.

A surface of its own beside the channels: server-rendered HTML (Jinja2), plain forms with
POST-redirect-GET (so the back button never re-answers), a little plain JavaScript that only
saves taps. It calls the same services as the chat (``bot.services.quiz``), so an attempt started
here continues in chat at the next question and the other way round.

- (the chat's side, minting a member's link, is ``bot.services.web_links``.)
- ``miniapp``: Telegram Mini App ``initData`` checking.
- ``site``: the Starlette routes, mounted under ``/hoc`` by ``bot/web.py``.
- ``server``: the pages in a thread of their own (playground, tests, bench).
"""
