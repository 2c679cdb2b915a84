"""One-line errors for users: raise UserError deep inside, print it once at the entry point."""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """A problem with the user's input (a file, a flag, a value) that the user can fix.

    The message is one line naming the file or value and what to do about it.
    """


def run_main(main: Callable[[], int | None]) -> None:
    """Run an entry point; a UserError becomes `error: <message>` on stderr and exit status 2."""
    try:
        status = main()
    except UserError as error:
        _close_progress_bars()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def _close_progress_bars() -> None:
    """Finish any tqdm bar still drawn, so the error starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            bar.close()
