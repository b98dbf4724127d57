"""The bearer tokens ``/v1`` accepts: the one in ``rmd.auth.token-file``, taken again when
the file changes (a Secret mounted as a volume is rewritten by the kubelet when the Secret
changes), so a token is rotated without restarting the daemon.

The token before the current one stays accepted until the next rotation: running
TaskManager pods got the token from the Secret as an environment variable, which they never
re-read, and must not be refused (and lost) because the token was rotated; pods started
after the rotation get the new one. The file is looked at (one ``stat``) at most once per
``check_every`` seconds; a file that cannot be read or is empty changes nothing (one warning
line, never the token itself).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from rmd.core.clock import Clock

__all__ = ["CHECK_EVERY", "BearerTokens"]

log = structlog.get_logger("rmd.api")

CHECK_EVERY = 1.0  # seconds between two looks at the token file


class BearerTokens:
    def __init__(
        self,
        initial: str,
        *,
        clock: Clock,
        path: Path | None = None,
        check_every: float = CHECK_EVERY,
    ) -> None:
        token = initial.strip()
        if not token:
            raise ValueError("the bearer token is empty: give a token or no authentication")
        self._current = token.encode("utf-8")
        self._previous: bytes | None = None
        self._path = path
        self._clock = clock
        self._check_every = check_every
        self._checked_at = clock.monotonic()
        self._stamp = self._file_stamp()
        self._complained = False

    def accepted(self) -> tuple[bytes, ...]:
        """The tokens a request may carry: the current one, then the one before it."""
        self._maybe_reload()
        if self._previous is None:
            return (self._current,)
        return (self._current, self._previous)

    def _maybe_reload(self) -> None:
        if self._path is None:
            return
        now = self._clock.monotonic()
        if now - self._checked_at < self._check_every:
            return
        self._checked_at = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            token = self._path.read_text().strip()
        except OSError as exc:
            self._complain(f"cannot read it ({exc.strerror})")
            return
        if not token:
            self._complain("it is empty")
            return
        self._stamp = stamp
        self._complained = False
        if token.encode("utf-8") == self._current:
            return
        self._previous, self._current = self._current, token.encode("utf-8")
        log.info(
            "auth_token_rotated",
            file=str(self._path),
            accepted="the new token and the one before it",
        )

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _complain(self, what: str) -> None:
        if not self._complained:
            log.warning(
                "auth_token_file_unusable",
                file=str(self._path),
                problem=what,
                consequence="the tokens accepted so far stay accepted",
            )
            self._complained = True
