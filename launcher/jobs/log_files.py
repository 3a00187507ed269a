"""Reading a role's log as it grows, in bounded memory whatever the file holds (`launch logs`).

    reader = LogReader(path, timed=True)     # timed: each line with its receive time (<role>.log.times)
    reader.tail(n)                            # start at the last n lines (read backwards from the end)
    for when, piece, whole in reader.lines(final, budget): ...

A line longer than MAX_LINE comes in pieces (`whole` False for all but its last), so one line without a newline
never holds more than MAX_LINE bytes here; `budget` bounds the bytes one call reads, so that following a fast
writer is fair to the other roles. Files are opened only as regular files, never through a link
(mxlaunch.files.open_regular): a planted link to /dev/zero is refused, not read forever.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

from mxlaunch.files import MIB, UnsafeFile, open_regular
from mxlaunch.launcher.jobs.output import times_path

CHUNK = MIB  # bytes read at a time
MAX_LINE = MIB  # a longer line is passed on in pieces of this size
MAX_STAMP = 64  # a receive time is "%.3f": a longer line of the times file is damage
Piece = Tuple[bytes, bool]  # (bytes without the newline, whether they end their line)


def _open(path: str):
    """open_regular; a file this user may not read (EACCES, EIO, ...) is one line naming it, like a link, not
    an internal error. FileNotFoundError when it is absent (not written yet)."""
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnsafeFile(f"{path} cannot be read ({exc.strerror or exc})") from exc


class LineFile:
    """The lines of one file from an offset on, read a chunk at a time and cut into lines one at a time: what
    is held is at most a chunk and a line's start, however many lines a chunk holds (a chunk of bare newlines
    split whole would be a million objects)."""

    def __init__(self, path: str, offset: int = 0):
        self.path, self.offset = path, offset
        self.buffer = b""  # bytes read and not yet passed on, from `at` on
        self.at = 0

    def _fill(self) -> int:
        """Read one chunk onto what is left of the buffer; the bytes read (0: nothing more now, or no such file)."""
        try:
            with _open(self.path) as f:
                f.seek(self.offset)
                data = f.read(CHUNK)
        except FileNotFoundError:
            return 0
        self.offset += len(data)
        self.buffer, self.at = self.buffer[self.at:] + data, 0
        return len(data)

    def _cut(self, final: bool) -> Optional[Piece]:
        """The next piece of what is buffered: a whole line, MAX_LINE bytes of a longer one, or (`final`) the
        unterminated rest; None when more must be read first."""
        end = self.buffer.find(b"\n", self.at)
        if end >= 0:
            piece, self.at = self.buffer[self.at:end], end + 1
            return piece, True
        if len(self.buffer) - self.at > MAX_LINE:
            piece, self.at = self.buffer[self.at:self.at + MAX_LINE], self.at + MAX_LINE
            return piece, False
        if final and len(self.buffer) > self.at:
            piece, self.buffer, self.at = self.buffer[self.at:], b"", 0
            return piece, True
        return None

    def next(self, final: bool, budget: Optional[list] = None) -> Optional[Piece]:
        """The next piece, reading on as needed; None when the file has nothing more now (`final`: its
        unterminated last line counts as a line). `budget`: [bytes this call may still read], spent here."""
        while True:
            piece = self._cut(final=False)
            if piece is not None:
                return piece
            if budget is not None and budget[0] <= 0:
                return None
            got = self._fill()
            if budget is not None:
                budget[0] -= got
            if not got:
                return self._cut(final)


def tail_offset(path: str, lines: int, final: bool, count: bool = True) -> Tuple[int, int]:
    """(offset where the last `lines` lines of `path` begin, how many lines come before it), reading backwards
    a chunk at a time and counting forwards the same way: memory is one chunk whatever the file. Not `final`:
    an unterminated last line is not yet a line. Without `count` the lines before are not counted (0): that
    reads the whole file before the tail, which only finding their receive times needs."""
    with _open(path) as f:
        end = f.seek(0, 2)
        if end and not final:
            end = _newline_before(f, end) + 1
        search = end
        if end:
            f.seek(end - 1)
            search -= f.read(1) == b"\n"  # the newline ending the last line starts no line
        start = end
        for _ in range(lines):
            if start == 0:
                break
            start = _newline_before(f, search) + 1  # the start of one more line, back from the end
            search = start - 1
        return start, _count_lines(f, start) if count else 0


def _newline_before(f, end: int) -> int:
    """The offset of the last newline before offset `end` (-1: none)."""
    position = end
    while position > 0:
        step = min(CHUNK, position)
        position -= step
        f.seek(position)
        at = f.read(step).rfind(b"\n")
        if at >= 0:
            return position + at
    return -1


def _count_lines(f, end: int) -> int:
    f.seek(0)
    count, left = 0, end
    while left > 0:
        block = f.read(min(CHUNK, left))
        if not block:
            break
        count += block.count(b"\n")
        left -= len(block)
    return count


class LogReader:
    """A role's log; with `timed`, each line with its receive time from the times file beside it (the previous
    line's where that file lags, is missing or is damaged: then `warning` says why, once)."""

    def __init__(self, path: str, timed: bool = False):
        self.log = LineFile(path)
        self.times = LineFile(times_path(path)) if timed else None
        self.index = 0  # lines of the log passed on whole so far: the times file's line for the next one
        self.stamps_read = 0
        self.last_time = 0.0
        self.warning: Optional[str] = None

    def tail(self, lines: int, final: bool) -> None:
        try:
            offset, before = tail_offset(self.log.path, lines, final, count=self.times is not None)
        except FileNotFoundError:  # not written yet: its first line is the first to show
            return
        self.log.offset = offset
        self.index = before

    def _time(self) -> float:
        """The receive time of the log's line number `index` (0-based)."""
        if self.times is None:
            return 0.0
        try:
            while self.stamps_read <= self.index:
                piece = self.times.next(final=False)
                if piece is None:
                    break
                stamp, whole = piece
                if whole:
                    self.stamps_read += 1
                if whole and self.stamps_read == self.index + 1 and len(stamp) <= MAX_STAMP:
                    try:
                        self.last_time = float(stamp)
                    except ValueError:
                        pass
        except (UnsafeFile, OSError) as exc:
            self.warning = f"{exc}: lines merged without their receive times"
            self.times = None
        return self.last_time

    def lines(self, final: bool, budget: Optional[int] = None) -> Iterator[Tuple[float, bytes, bool]]:
        """(receive time, piece, whether it ends its line) of what the log holds now past what was read."""
        left = None if budget is None else [budget]
        while True:
            piece = self.log.next(final, left)
            if piece is None:
                return
            when = self._time()
            if piece[1]:
                self.index += 1
            yield when, piece[0], piece[1]
