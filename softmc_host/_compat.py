"""Small shims for the Python versions the toolkit supports (3.10 and later).

:func:`add_note` attaches a note to an exception: ``BaseException.add_note`` where it
exists (Python 3.11+), and on Python 3.10 a fallback with the same visible effect.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Optional, Type

__all__ = ["add_note", "HAS_NATIVE_ADD_NOTE"]

#: Whether this Python has ``BaseException.add_note`` (3.11+). :func:`add_note` reads it
#: at every call, so a test may switch it off to exercise the 3.10 fallback.
HAS_NATIVE_ADD_NOTE: bool = hasattr(BaseException, "add_note")


def add_note(exc: BaseException, text: str) -> None:
    """Attach ``text`` to ``exc`` as a note, shown after the exception's message in tracebacks.

    Parameters
    ----------
    exc : BaseException
        The exception, typically one that is propagating and must stay the one raised.
    text : str
        The note (one line, by the project's conventions).

    Raises
    ------
    TypeError
        ``text`` is not a string (as ``BaseException.add_note`` does).
    """
    if HAS_NATIVE_ADD_NOTE:
        exc.add_note(text)  # type: ignore[attr-defined]
    else:
        _add_note_fallback(exc, text)


def _add_note_fallback(exc: BaseException, text: str) -> None:
    """Python 3.10's :func:`add_note`: append to ``__notes__`` and make sure notes get printed.

    ``__notes__`` is the attribute Python 3.11 prints and pytest and the ``exceptiongroup``
    backport read. Python 3.10's own traceback printing ignores it, so the first call also
    installs :func:`_excepthook_with_notes` as ``sys.excepthook`` (only if the hook is still
    the interpreter's default): an uncaught exception then prints its notes after the
    traceback, as 3.11 does.
    """
    if not isinstance(text, str):
        raise TypeError(f"note must be a str, not {type(text).__name__}")
    notes = getattr(exc, "__notes__", None)
    if not isinstance(notes, list):
        notes = list(notes) if isinstance(notes, tuple) else []
        try:
            exc.__notes__ = notes  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # an exception type that refuses attributes
            return
    notes.append(text)
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _excepthook_with_notes


def _excepthook_with_notes(
    exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]
) -> None:
    """Print an uncaught exception as the default hook does, followed by its ``__notes__``."""
    sys.__excepthook__(exc_type, exc, tb)
    if sys.version_info >= (3, 11):  # the default hook has printed the notes already
        return
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, (list, tuple)):
        for note in notes:
            print(note if isinstance(note, str) else repr(note), file=sys.stderr)
