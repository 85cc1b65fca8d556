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


def test_a_branch_bots_token_is_redacted_among_two_thousand_and_its_neighbours_are_left_alone(capsys):
    """With a province's 2,000 branch bots learned, each bot's token (plain or URL-encoded, as httpx
    writes it) is removed from a log line; numbers that merely look like a bot id stay readable."""
    import logging as logging_

    from bot.logs import _LEARNED, learn_secrets, setup_logging

    tokens = [f"{4_000_000 + i}:secret-{i:04d}-abcdef" for i in range(2000)]
    learn_secrets(*tokens, "plain-secret-not-shaped-like-a-bot")
    root = logging_.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging()
        log = logging_.getLogger("hoctap.test")
        log.warning("POST https://bot-api.zaloplatforms.com/bot%s/sendMessage failed", tokens[1234])
        log.warning("retry %s for chat 4001234:99 at 12:30", tokens[7].replace(":", "%3A"))
        log.warning("config had plain-secret-not-shaped-like-a-bot in it")
        err = capsys.readouterr().err
        quiet_httpx = logging_.getLogger("httpx").getEffectiveLevel() >= logging_.WARNING  # its INFO lines quote URLs
    finally:  # no handler left on this test's captured stderr, which closes with the test
        root.handlers[:] = handlers
        root.setLevel(level)
        _LEARNED.clear()
    assert "secret-1234" not in err and "secret-0007" not in err and "plain-secret" not in err
    assert "/bot<secret>/sendMessage" in err and "retry <secret> for chat 4001234:99 at 12:30" in err
    assert quiet_httpx
