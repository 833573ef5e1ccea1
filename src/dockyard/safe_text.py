"""Untrusted text made safe for a terminal or a log line: the one place for it.

Anyone who may push chooses package names and versions (a dpkg status), annotations, advisory
text in a mirror, and what syft prints about them. Printed raw, an ESC or C1 byte is a terminal
command (clear the screen, set the window title, an OSC 8 link that hides its target), and a
newline in a logged value forges a log line. So:

- `terminal_safe()` shows every C0/C1 control character (but newline and tab), DEL, and the
  Unicode line separators and bidirectional overrides as a visible escape (`\\x1b`, `\\u202e`);
- `safe_console()` is the Rich console every CLI command prints with: it escapes the text of
  everything it renders (tables, progress, JSON, errors), while Rich's own styling still works;
- `SafeFormatter` (installed by `configure_logging`) escapes the values a log call passes,
  newlines included, and then the whole line, so server logs carry no raw control characters;
  `JsonFormatter` (log_format = json) writes JSON lines, whose encoding escapes them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from rich.console import Console
from rich.segment import Segment

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 but tab and newline, DEL, C1, line/paragraph separators, bidi embeddings/overrides/isolates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_OR_NEWLINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str, *, newlines: bool = True) -> str:
    """`text` with every control character shown as an escape; `newlines=False` escapes newlines
    and tabs too (one value that must stay on its line)."""
    return (_UNSAFE if newlines else _UNSAFE_OR_NEWLINE).sub(_escape, text)


def one_line(text: str) -> str:
    return terminal_safe(text, newlines=False)


# -- the CLI's console ------------------------------------------------------------------------------


class SafeConsole(Console):
    """A Rich console whose rendered text is escaped before it reaches the terminal.

    The hook is `render`, which every print, table cell, progress line and log entry goes through;
    Rich's own control segments (cursor moves of a live display) are kept, and styles are applied
    after this, so colours still work."""

    def render_str(self, text: str, **kwargs):
        """Strings are escaped before Rich measures them, so tables keep their layout."""
        return super().render_str(terminal_safe(text), **kwargs)

    def render(self, renderable, options=None):  # noqa: D102 (Rich's documented entry point)
        for segment in super().render(renderable, options):
            if segment.control or not _UNSAFE.search(segment.text):
                yield segment
            else:
                yield Segment(terminal_safe(segment.text), segment.style, segment.control)

    def print(self, *objects: Any, **kwargs) -> None:
        """Tables printed to a pipe or a file come out as tab-separated values (`table_rows`), every value whole:
        a table laid out for an 80-column terminal would cut values short for the program reading them."""
        from rich.table import Table

        if objects and not self.is_terminal and all(isinstance(o, Table) for o in objects):
            for table in objects:
                # Straight to the file: Rich would expand the tabs to spaces. Cells are escaped by table_rows().
                self.file.write("".join("\t".join(line) + "\n" for line in table_rows(table)))
            self.file.flush()
            return
        if not self.is_terminal:  # a message redirected to a file stays on its line: grep and copy-paste work
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)

    def print_json(self, json_text: str | None = None, *, data: Any = None, **kwargs) -> None:
        """As Rich's, but non-ASCII is escaped in the JSON itself (`\\u009b`), so the output stays
        valid JSON instead of being escaped again as text."""
        if json_text is None:
            json_text = json.dumps(data, default=kwargs.pop("default", None))
        kwargs.setdefault("ensure_ascii", True)
        super().print_json(json_text, **kwargs)


def table_rows(table) -> list[list[str]]:
    """A Rich table as plain text cells (markup and styles dropped, each value on one line): its title as a `# `
    comment line if it has one, then the header, then the rows."""
    from rich.text import Text

    def plain(cell: Any) -> str:
        if isinstance(cell, Text):
            text = cell.plain
        elif isinstance(cell, str):
            try:
                text = Text.from_markup(cell).plain
            except Exception:  # noqa: BLE001 - not markup after all (an unescaped `[/x]` in a value): show it as it is
                text = cell
        else:
            text = str(cell)
        return one_line(text)

    rows = [[f"# {plain(table.title)}"]] if table.title else []  # a comment line: TSV readers skip it (`#`)
    rows.append([plain(column.header) for column in table.columns])
    for index in range(table.row_count):
        rows.append([plain(column._cells[index]) if index < len(column._cells) else "" for column in table.columns])
    return rows


def safe_console(**kwargs) -> SafeConsole:
    return SafeConsole(**kwargs)


# -- logging ----------------------------------------------------------------------------------------


def _safe_arg(value: Any) -> Any:
    if isinstance(value, (int, float)) or value is None:
        return value
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, BaseException):
        return one_line(str(value))
    return value


class SafeFormatter(logging.Formatter):
    """Escapes each logged value on one line (a package name cannot start a fake log line), then
    any control character left in the whole record (the message text, a traceback)."""

    def __init__(self, fmt: str | None = LOG_FORMAT, *args, inner: logging.Formatter | None = None, **kwargs):
        super().__init__(fmt, *args, **kwargs)
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, dict):
            args = {k: _safe_arg(v) for k, v in args.items()}
        elif isinstance(args, tuple):
            args = tuple(_safe_arg(a) for a in args)
        copy = logging.makeLogRecord({**record.__dict__, "args": args})
        text = self.inner.format(copy) if self.inner is not None else super().format(copy)
        return terminal_safe(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (when the line was logged
    for a request or a job), exc (a traceback). json.dumps escapes every control character and
    non-ASCII character, so a logged value can neither break the line nor reach a terminal raw."""

    converter = time.gmtime  # log times are UTC ("Z")

    def format(self, record: logging.LogRecord) -> str:
        from dockyard import request_context

        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_context.request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


# httpx logs "HTTP Request: POST <full URL>" at INFO and httpcore every connection step at DEBUG;
# webhook URLs hold secrets (a Slack incoming webhook's path is its credential).
QUIET_LOGGERS = ("httpx", "httpcore")


def configure_logging(level: str, log_format: str = "text") -> None:
    """Set the log level and make every handler escape control characters: the root's, and those
    the ASGI server installed on its own loggers (granian's access log prints request paths). A
    handler keeps its format; only the escaping is added. `log_format="json"` makes every handler
    write JSON lines instead (JsonFormatter)."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    logging.getLogger().setLevel(level.upper())
    for name in QUIET_LOGGERS:  # whatever the level: they log full request URLs (Slack's carry a secret)
        logging.getLogger(name).setLevel(logging.WARNING)
    loggers = [logging.getLogger()] + [
        logger for logger in list(logging.Logger.manager.loggerDict.values()) if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if log_format == "json":
                if not isinstance(handler.formatter, JsonFormatter):
                    handler.setFormatter(JsonFormatter())
            elif not isinstance(handler.formatter, SafeFormatter):
                handler.setFormatter(SafeFormatter(inner=handler.formatter) if handler.formatter else SafeFormatter())


# Granian's own loggers (its parent process logs before any app exists) in JSON lines too.
JSON_LOG_DICTCONFIG = {
    "formatters": {
        "generic": {"()": "dockyard.safe_text.JsonFormatter"},
        "access": {"()": "dockyard.safe_text.JsonFormatter"},
    },
}
