"""Issue 19 item 3 at the source: the escaping every CLI print and server log line goes through."""

from __future__ import annotations

import io
import logging

from dockyard.safe_text import SafeFormatter, configure_logging, safe_console, terminal_safe

HOSTILE = "a\x1b[2Jb\x1b]0;t\x07c\x9bd\u202ee\rf"


def test_item3_terminal_safe_shows_control_characters_escaped():
    assert terminal_safe(HOSTILE) == "a\\x1b[2Jb\\x1b]0;t\\x07c\\x9bd\\u202ee\\x0df"
    assert terminal_safe("line\n\ttab") == "line\n\ttab"
    assert terminal_safe("one\nline", newlines=False) == "one\\x0aline"
    assert terminal_safe("plain ünïcode ✓") == "plain ünïcode ✓"


def test_item3_safe_console_escapes_text_tables_and_json_but_keeps_styles():
    from rich.table import Table

    buf = io.StringIO()
    console = safe_console(file=buf, force_terminal=True, width=200, soft_wrap=True)
    console.print(f"[bold]{HOSTILE}[/bold]", highlight=False)
    table = Table("name")
    table.add_row(HOSTILE)
    console.print(table)
    console.print_json(data={"name": HOSTILE})
    out = buf.getvalue()
    assert "\x07" not in out and "\x9b" not in out and "\u202e" not in out and "\r" not in out
    # The only ESC bytes left are Rich's own SGR styles (ESC [ digits m).
    assert out.replace("\x1b[", "").count("\x1b") == 0
    assert "\x1b[2J" not in out and "\x1b]" not in out
    assert "a\\x1b[2Jb\\x1b]0;t" in out and "\x1b[1m" in out  # escaped text, styles intact


def test_item3_log_formatter_keeps_each_value_on_its_line():
    record = logging.LogRecord("dockyard", logging.WARNING, __file__, 1, "package %s version %s", ("evil\nFAKE LINE", HOSTILE), None)
    line = SafeFormatter("%(message)s").format(record)
    assert line == "package evil\\x0aFAKE LINE version a\\x1b[2Jb\\x1b]0;t\\x07c\\x9bd\\u202ee\\x0df"
    pre_formatted = logging.LogRecord("dockyard", logging.WARNING, __file__, 1, f"raw {HOSTILE}", None, None)
    assert "\x1b" not in SafeFormatter("%(message)s").format(pre_formatted)


def test_item3_configure_logging_wraps_handlers_already_installed():
    logger = logging.getLogger("granian.test-access")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("ACCESS %(message)s"))
    logger.addHandler(handler)
    root = logging.getLogger()
    before = (list(root.handlers), root.level, [h.formatter for h in root.handlers])
    try:
        configure_logging("info")
        logger.warning("GET %s", "/v2/\x1b[2J")
        assert handler.stream.getvalue() == "ACCESS GET /v2/\\x1b[2J\n"
    finally:
        logger.removeHandler(handler)
        for h in list(root.handlers):
            if h not in before[0]:
                root.removeHandler(h)
        for h, formatter in zip(before[0], before[2]):
            h.setFormatter(formatter)
        root.setLevel(before[1])


def test_cli_crash_report_shows_no_local_variables():
    """Typer's pretty tracebacks print every local (a password, an image's hostile text) by default."""
    from dockyard.cli import app

    assert app.pretty_exceptions_show_locals is False
