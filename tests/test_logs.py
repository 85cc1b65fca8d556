"""Tokens never reach the log, not even inside a traceback."""

import logging

from bot.logs import RedactingFormatter


def test_a_token_in_a_message_and_in_a_traceback_is_redacted():
    formatter = RedactingFormatter("%(levelname)s %(message)s", ["123456:SECRET"])
    try:
        raise RuntimeError("POST https://api.telegram.org/bot123456:SECRET/sendMessage failed")
    except RuntimeError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "calling %s", ("bot123456:SECRET",), sys.exc_info())
    text = formatter.format(record)
    assert "SECRET" not in text
    assert "calling bot<secret>" in text and "RuntimeError" in text
