"""Progress of long loads and writes: a tqdm bar, a callback, or nothing.

Every loader and writer takes ``progress=``:

* ``"auto"`` (the default): a bar when the work spans more than one batch, lasts over a
  second, and someone can see it (a Jupyter kernel, or stderr is a terminal); nothing in
  scripts, CI, logs;
* ``True``: always a bar; ``False``: never;
* a callable: called as ``progress(done, total)`` after each batch (``total`` is None
  when unknown, as for loads: MongoDB does not say how much a query will return).

In a notebook the bar is tqdm's widget when ``ipywidgets`` is installed (the
``notebook`` extra), else tqdm's text bar on stderr.

>>> seen = []
>>> with Reporter(lambda done, total: seen.append((done, total)), "users", 10, "rows") as r:
...     r.update(4)
...     r.update(6)
>>> seen
[(4, 10), (10, 10)]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal, Self

__all__ = ["Progress", "Reporter", "interactive"]

Progress = bool | Literal["auto"] | Callable[[int, int | None], Any]

AUTO_DELAY = 1.0
"""Seconds before an ``"auto"`` bar shows: quick work leaves no trace in the output."""


def check_progress(progress: Any) -> None:
    """Reject anything but the documented values (before any work starts)."""
    if progress is True or progress is False or callable(progress) or (
        isinstance(progress, str) and progress == "auto"
    ):
        return
    raise ValueError(
        f"progress must be 'auto', True, False or a callable(done, total), got {progress!r}"
    )


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = shell.get_ipython()  # type: ignore[attr-defined]
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


def interactive() -> bool:
    """True in a Jupyter kernel or when stderr is a terminal (someone sees a bar)."""
    if _in_notebook():
        return True
    stream = sys.stderr
    return stream is not None and hasattr(stream, "isatty") and stream.isatty()


def _bar(desc: str, total: int | None, unit: str, initial: int, delay: float) -> Any:
    options: dict[str, Any] = {
        "desc": desc, "total": total, "initial": initial, "unit": unit, "delay": delay,
    }
    if unit == "B":
        options.update(unit_scale=True, unit_divisor=1024)
    else:
        options.update(unit_scale=False)
    if _in_notebook():
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm(**options)
        except ImportError:  # no widgets: the text bar, on stderr
            pass
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **options)


class Reporter:
    """Reports one load's or write's progress, batch by batch.

    ``unit`` is ``"rows"`` or ``"B"`` (bytes, shown scaled). With ``"auto"``, work done
    in one batch shows nothing: a bar appears once a first batch leaves work to do (total
    known), or at the second batch (total unknown).
    """

    __slots__ = ("_auto", "_bar", "_callback", "_wanted", "batches", "desc", "done", "total",
                 "unit")

    def __init__(self, progress: Progress, desc: str, total: int | None, unit: str) -> None:
        check_progress(progress)
        self.desc = desc
        self.total = total
        self.unit = unit
        self.done = 0
        self.batches = 0
        self._callback = progress if callable(progress) else None
        self._auto = isinstance(progress, str)  # "auto"
        self._wanted = interactive() if self._auto else progress is True
        self._bar: Any = None

    @property
    def watching(self) -> bool:
        """True when this work's progress may be shown (a bar, or a callback): a load
        then asks for smaller batches, so the bar moves while it runs."""
        return self._callback is not None or bool(self._wanted)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, amount: int) -> None:
        """``amount`` more units are done (one batch)."""
        self.done += amount
        self.batches += 1
        if self._callback is not None:
            self._callback(self.done, self.total)
            return
        if not self._wanted:
            return
        if self._bar is None:
            if self._auto and (
                self.done >= self.total if self.total is not None else self.batches < 2
            ):
                return  # (so far) one batch did it all: no bar
            delay = AUTO_DELAY if self._auto else 0.0
            self._bar = _bar(self.desc, self.total, self.unit, self.done - amount, delay)
        self._bar.update(amount)

    def close(self) -> None:
        """End the bar (it stays on screen with its final count)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
