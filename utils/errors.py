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
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
