"""Server logs a client cannot flood: one WARNING line per client error, tracebacks only for server faults.

BentoML logs every request its API wrapper refuses with ``logger.error(...,
exc_info=True)``: a 24-line traceback for a 400. :class:`ClientErrorsAsWarnings`
turns those into one WARNING line naming the route and the fields;
:class:`RateLimit` lets a burst of lines of one kind through and then
counts the rest, reported with the next line of that kind after the window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from serving.edge import INTERNAL_NAME, field_messages, shown

LOGGED_ACCOUNT_CHARS = 500  # of a client error's one line: it quotes what the client sent

# The logger of BentoML's API wrapper (``log_exception`` in bentoml/_internal/server/http_app.py).
BENTOML_API_LOGGER = "bentoml._internal.server.http_app"  # private: serving/internals.py
OUR_LOGGERS = ("recsys", "recsys.edge")


def client_error(exc: BaseException | None) -> tuple[int, str] | None:
    """The status and a one-line account of an exception that is the client's fault, else None."""
    from bentoml.exceptions import BentoMLException, ServiceUnavailable
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return 400, f"invalid request: {field_messages(exc.errors(include_context=False, include_input=False))}"
    # A 503 says "not now" (a stage down, a queue full): one line, not a traceback per request of an outage.
    if isinstance(exc, BentoMLException) and (int(exc.error_code) < 500 or isinstance(exc, ServiceUnavailable)):
        return int(exc.error_code), INTERNAL_NAME.sub("", str(exc))[:200]
    return None


class ClientErrorsAsWarnings(logging.Filter):
    """BentoML's ERROR-with-traceback for a refused request, as one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = client_error(record.exc_info[1] if record.exc_info else None)
        if found is None:
            return True  # a real fault keeps its traceback
        status, account = found
        where = record.getMessage().removeprefix("Exception on ")
        # Escaped: field names are the client's (filter attributes, user attribute keys), and a newline in one
        # would end this line and start a forged one.
        record.msg, record.args = "%d %s: %s", (status, shown(where), shown(account, LOGGED_ACCOUNT_CHARS))
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


class RateLimit(logging.Filter):
    """At most ``burst`` lines of one kind per ``seconds``; the rest counted and reported later.

    A kind is the logger, level, message template and (when it is a number)
    the first argument, the HTTP status in our templates: 5,000 different
    unknown paths are one kind, so a flood writes ``burst`` lines per window.
    """

    def __init__(self, burst: int = 10, seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.seconds, self.clock = burst, seconds, clock
        self._windows: dict[tuple, list] = {}  # kind -> [window start, lines let through, lines suppressed]
        self._lock = threading.Lock()

    @staticmethod
    def kind(record: logging.LogRecord) -> tuple:
        args = record.args if isinstance(record.args, tuple) else ()
        first = args[0] if args and isinstance(args[0], int) else None
        return record.name, record.levelno, str(record.msg), first

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        with self._lock:
            window = self._windows.setdefault(self.kind(record), [now, 0, 0])
            if now - window[0] >= self.seconds:
                suppressed = window[2]
                window[:] = [now, 0, 0]
                if suppressed and isinstance(record.args, tuple):
                    record.msg = f"{record.msg} [%d similar lines suppressed]"
                    record.args = (*record.args, suppressed)
            window[1] += 1
            if window[1] <= self.burst:
                return True
            window[2] += 1
            return False


_installed = False


def install(burst: int = 10, seconds: float = 10.0) -> None:
    """Attach the filters to BentoML's API logger and ours (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    limit = RateLimit(burst, seconds)
    api = logging.getLogger(BENTOML_API_LOGGER)
    api.addFilter(ClientErrorsAsWarnings())
    api.addFilter(limit)  # after the rewrite, so 400s are counted as one kind
    for name in OUR_LOGGERS:
        logging.getLogger(name).addFilter(limit)
