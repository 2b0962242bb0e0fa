"""What a trial's code prints in a process other than the search's (a pool worker, a Ray actor):
sent on in whole lines, for the search's process to write as its own, above its progress bar."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Printed:
    """Whole lines a trial's code wrote to ``stream`` (``stdout`` or ``stderr``), as they travel."""

    text: str
    stream: str


class PrintedLines(io.TextIOBase):
    """A process's ``sys.stdout`` or ``sys.stderr`` whose whole lines go to ``send`` (a ``Printed``)
    (written straight to the terminal, they ran into the progress bar's line). Writes to the
    file descriptor (C code) still go where they went."""

    def __init__(self, send: Callable[[Printed], None], stream: str, original: Any) -> None:
        super().__init__()
        self.send, self.stream, self.original = send, stream, original
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        if "\n" in self.pending:
            whole, _, self.pending = self.pending.rpartition("\n")
            self.send(Printed(whole + "\n", self.stream))
        return len(text)

    def flush(self) -> None:
        """Lines go whole: a line still being written waits for its end (or ``close_line``)."""

    def close_line(self) -> None:
        if self.pending:
            self.send(Printed(self.pending + "\n", self.stream))
            self.pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.original.fileno()

    def writable(self) -> bool:
        return True


def send_printed(send: Callable[[Printed], None]) -> tuple[PrintedLines, PrintedLines]:
    """This process's ``sys.stdout`` and ``sys.stderr`` sent on through ``send``."""
    sys.stdout = printed = PrintedLines(send, "stdout", sys.stdout)
    sys.stderr = warned = PrintedLines(send, "stderr", sys.stderr)
    return printed, warned


def write_printed(printed: Printed) -> None:
    """Write what another process printed as this one's own (through the progress bar's hold on
    this process's streams, where one is shown)."""
    print(printed.text, end="", file=sys.stderr if printed.stream == "stderr" else sys.stdout, flush=True)
