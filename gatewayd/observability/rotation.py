# -*- test-case-name: tests.integration.test_logging_outputs -*-
"""
A size-rotated log file that behaves like lumberjack (GatewayD's C{file} output).

Rotation renames C{name.ext} to C{name-2006-01-02T15-04-05.000.ext} (UTC, or
local time with C{localTime}) and starts a fresh file.  Pruning (C{maxBackups},
C{maxAge}) and gzip compression run on a short-lived worker thread, because
compressing a 500 MB file would stall the reactor for seconds; the write
itself stays on the caller's thread (one C{write(2)} per line).

Differences from lumberjack, on purpose:
  - backup names are made unique: two rotations in the same millisecond get
    consecutive milliseconds instead of overwriting each other;
  - ages are read from backup names in the zone they were written in
    (lumberjack parses local-time names as UTC);
  - a line larger than C{maxSize} goes alone into a fresh file instead of
    failing the write.
"""

from __future__ import annotations

import gzip
import os
import shutil
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

MEGABYTE = 1024 * 1024
#: lumberjack's size when C{maxSize} is 0.
DEFAULT_MAX_SIZE_MB = 100
_STAMP = "%Y-%m-%dT%H-%M-%S"


class RotatingFile:
    """
    An append-only file rotated at C{max_bytes}.

    @ivar mill_errors: failures while pruning/compressing backups (int).
    @ivar rotate_errors: rotations that failed (the file then keeps growing).
    """

    def __init__(self, path: str, *, max_size_mb: float, max_backups: int, max_age_days: float,
                 compress: bool, local_time: bool,
                 clock: Callable[[], float] | None = None) -> None:
        """
        @param max_size_mb: rotation threshold in MiB (fractions allowed); 0 means 100.
        @param max_backups: rotated files to keep; 0 keeps all (subject to C{max_age_days}).
        @param max_age_days: delete backups older than this many days; 0 keeps all.
        @param clock: seconds since the epoch, for rotation names and ages.
        """
        self.path = os.path.abspath(path)
        self.max_bytes = max(1, int((max_size_mb or DEFAULT_MAX_SIZE_MB) * MEGABYTE))
        self.max_backups = max_backups
        self.max_age_days = max_age_days
        self.compress = compress
        self.local_time = local_time
        self._clock = clock or time.time
        self._fd: int | None = None
        self._size = 0
        self._lock = threading.Lock()
        self._mill = _Worker(self._mill_once)
        directory, base = os.path.split(self.path)
        self._dir = directory
        self._prefix, self._ext = os.path.splitext(base)
        self.mill_errors = 0
        self.rotate_errors = 0
        self._last_backup: datetime | None = None

    # -- writing -----------------------------------------------------------

    def open(self) -> None:
        """Open (creating directories) and prune old backups; raises C{OSError}."""
        with self._lock:
            self._open_locked()
        self._mill.request()

    def write(self, data: bytes) -> None:
        """Append C{data}, rotating first when it would cross C{max_bytes}."""
        with self._lock:
            if self._fd is None:
                self._open_locked()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate_locked()
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)  # type: ignore[arg-type]
                self._size += written
                view = view[written:]

    def rotate(self) -> None:
        """Close the current file, rename it to a backup name, start a new one."""
        with self._lock:
            if self._fd is None:
                self._open_locked()
            self._rotate_locked()

    def close(self, timeout: float = 30.0) -> None:
        """Close the file and wait (up to C{timeout}) for pending compression."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self._mill.wait(timeout)

    def _open_locked(self) -> None:
        if self._fd is not None:
            return
        os.makedirs(self._dir, mode=0o755, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate_locked(self) -> None:
        mode = os.fstat(self._fd).st_mode & 0o7777  # type: ignore[arg-type]
        try:
            os.rename(self.path, self._free_backup_name())
        except OSError:
            # Keep logging into the full file rather than losing lines; try
            # again after another max_bytes.
            self.rotate_errors += 1
            self._size = 0
            return
        os.close(self._fd)  # type: ignore[arg-type]
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
        os.chmod(self.path, mode)
        self._size = 0
        self._mill.request()

    # -- backup names ------------------------------------------------------

    def _zone(self) -> timezone | None:
        return None if self.local_time else timezone.utc

    def backup_name(self, when: datetime) -> str:
        """lumberjack's name for a backup made at C{when}."""
        stamp = when.strftime(_STAMP) + f".{when.microsecond // 1000:03d}"
        return os.path.join(self._dir, f"{self._prefix}-{stamp}{self._ext}")

    def _free_backup_name(self) -> str:
        """
        A name later than every backup made so far: name order must stay age
        order, or pruning would keep the wrong files.
        """
        zone = self._zone()
        when = datetime.fromtimestamp(self._clock(), zone)
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)
        if self._last_backup is None:
            existing = self.backups()
            self._last_backup = existing[0][0] if existing else None
        if self._last_backup is not None:
            last = self._last_backup.replace(tzinfo=None) if zone is None else self._last_backup
            if when <= last:
                when = last + timedelta(milliseconds=1)
        while True:
            name = self.backup_name(when)
            if not os.path.exists(name) and not os.path.exists(name + ".gz"):
                self._last_backup = when if zone is not None else when.astimezone()
                return name
            when += timedelta(milliseconds=1)

    def _backup_time(self, filename: str) -> datetime | None:
        head = self._prefix + "-"
        if not filename.startswith(head):
            return None
        rest = filename[len(head):]
        for tail in (self._ext, self._ext + ".gz"):
            if tail and rest.endswith(tail):
                stamp = rest[:-len(tail)]
                break
        else:
            return None
        try:
            when = datetime.strptime(stamp, _STAMP + ".%f")
        except ValueError:
            return None
        if self.local_time:
            return when.astimezone()  # naive local -> aware local
        return when.replace(tzinfo=timezone.utc)

    def backups(self) -> list[tuple[datetime, str]]:
        """(time, path) of every backup on disk, newest first."""
        found = []
        try:
            names = os.listdir(self._dir)
        except OSError:
            return []
        for filename in names:
            when = self._backup_time(filename)
            if when is not None:
                found.append((when, os.path.join(self._dir, filename)))
        found.sort(reverse=True)
        return found

    # -- pruning and compression (worker thread) -----------------------------

    def _mill_once(self) -> None:
        backups = self.backups()
        keep: list[tuple[datetime, str]] = []
        seen: set[str] = set()
        doomed: list[str] = []
        for when, path in backups:
            base = path[:-3] if path.endswith(".gz") else path
            if base in seen:  # both name.log and name.log.gz: a half-done compression
                keep.append((when, path))
                continue
            if self.max_backups > 0 and len(seen) >= self.max_backups:
                doomed.append(path)
                continue
            seen.add(base)
            keep.append((when, path))
        if self.max_age_days > 0:
            now = datetime.fromtimestamp(self._clock(), timezone.utc)
            cutoff = now - timedelta(days=self.max_age_days)
            doomed.extend(path for when, path in keep if when < cutoff)
            keep = [(when, path) for when, path in keep if when >= cutoff]
        for path in doomed:
            self._remove(path)
        if self.compress:
            for _, path in keep:
                if not path.endswith(".gz") and os.path.exists(path):
                    self._gzip(path)

    def _remove(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError:
            self.mill_errors += 1

    def _gzip(self, path: str) -> None:
        target, partial = path + ".gz", path + ".gz.partial"
        try:
            with open(path, "rb") as src, open(partial, "wb") as raw:
                os.chmod(partial, os.fstat(src.fileno()).st_mode & 0o7777)
                with gzip.GzipFile(filename=os.path.basename(path), mode="wb", fileobj=raw) as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
            os.replace(partial, target)
            os.remove(path)
        except OSError:
            self.mill_errors += 1
            try:
                os.remove(partial)
            except OSError:
                pass


class _Worker:
    """Runs C{work} on a thread that exists only while there is work to do."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._lock = threading.Lock()
        self._pending = False
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def request(self) -> None:
        with self._lock:
            self._pending = True
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gatewayd-log-rotation", daemon=True)
                self._thread.start()

    def wait(self, timeout: float) -> bool:
        """True when no work is pending (waiting up to C{timeout} seconds)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    self._idle.set()
                    return
                self._pending = False
            try:
                self._work()
            except Exception:  # noqa: BLE001 - never kill the worker; counted by work itself
                pass
