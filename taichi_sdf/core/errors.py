"""The project's input errors and the one top-level handler every app's `main` goes through.

Bad input (an argument, a file, a config key the user can fix) is refused with a `ValueError`,
`TypeError` or `FileNotFoundError` whose message names what is wrong. `app_main(prog)` wraps an app's
`main(argv)`: such an error prints `prog: error: <message>` on stderr and exits 1 without a traceback;
`--debug` anywhere on the command line (removed before `main` sees it) or `TAICHI_SDF_DEBUG=1` shows
the traceback; any other exception (a bug) keeps its traceback. Ctrl-C outside a training loop (which
saves and exits by itself) prints `prog: interrupted` and exits 130.

What counts as a user error (`is_user_error`):
- an `InputError` (a ValueError), `InputTypeError` (a TypeError) or any other `BadInput` subclass
  (the trainer's `UserError`, the checkpoint reader's `CheckpointError`, ...);
- a ValueError / TypeError raised by a `raise` statement in the project's own code: the project's
  rule for refusing bad input, so the many plain `raise ValueError(f"{name}: expected ...")` count
  without a subclass, while one raised inside torch/numpy or by an operation of the project's code
  (a failed tuple unpacking, `int("x")`) is a bug and keeps its traceback;
- an `OSError` that names a file (`filename` set: a missing file, no permission, a folder where a
  file was expected): the message names the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import dis
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

__all__ = ["BadInput", "InputError", "InputTypeError", "is_user_error", "user_errors", "app_main", "DEBUG_ENV"]

DEBUG_ENV = "TAICHI_SDF_DEBUG"
DEBUG_FLAG = "--debug"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

R = TypeVar("R")


class BadInput(Exception):
    """Marker base of the project's refusals of bad input: an app prints the message, not a traceback."""


class InputError(BadInput, ValueError):
    """A value the user gave (argument, file content, config key, environment variable) is not usable."""


class InputTypeError(BadInput, TypeError):
    """An argument of the wrong type."""


# The project's source folders: the library, and the apps/models/kernels folders beside it in a checkout
# (an installed wheel puts them inside the library folder).
_PACKAGE = Path(__file__).resolve().parents[1]
_ROOTS = tuple(str(p) + os.sep for p in (_PACKAGE, *(_PACKAGE.parent / n for n in ("apps", "models", "kernels"))))


def _in_project(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_ROOTS)


def _raised_by_project(exc: BaseException) -> bool:
    """The exception left a `raise` statement in the project's code (not a library call or an operation)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    if not _in_project(code.co_filename):
        return False
    return any(i.offset == tb.tb_lasti and i.opname == "RAISE_VARARGS" for i in dis.get_instructions(code))


def is_user_error(exc: BaseException) -> bool:
    """Whether an app should report `exc` as one line (see the module docstring) rather than a traceback."""
    if isinstance(exc, BadInput):
        return True
    if isinstance(exc, OSError) and exc.filename is not None:
        return True
    return isinstance(exc, (ValueError, TypeError, FileNotFoundError)) and _raised_by_project(exc)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror and not isinstance(exc, BadInput):
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


_debug = contextvars.ContextVar("taichi_sdf_debug", default=False)


def debug_enabled() -> bool:
    """`--debug` was given to the running app, or `TAICHI_SDF_DEBUG` is set to a true value."""
    return _debug.get() or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Turn a user error (`is_user_error`) raised in the block into `prog: error: <message>` and exit 1
    (`SystemExit`), Ctrl-C into `prog: interrupted` and exit 130; other exceptions pass unchanged.
    With debugging on (`debug_enabled`) everything passes unchanged."""
    try:
        yield
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        if debug_enabled() or not is_user_error(exc):
            raise
        raise SystemExit(f"{prog}: error: {_message(exc)}") from None


def app_main(prog: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Decorate an app's `main(argv=None, ...)`: `--debug` is taken out of argv (default
    `sys.argv[1:]`) and turns debugging on for the call, and `user_errors(prog)` reports user errors.
    Nested apps (a command dispatching to a sub-command's `main`) inherit the outer `--debug`."""

    def wrap(main: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(main)
        def run(argv=None, *args, **kwargs) -> R:
            argv = list(sys.argv[1:] if argv is None else argv)
            debug = DEBUG_FLAG in argv
            token = _debug.set(_debug.get() or debug)
            try:
                with user_errors(prog):
                    return main([a for a in argv if a != DEBUG_FLAG], *args, **kwargs)
            finally:
                _debug.reset(token)

        return run

    return wrap
