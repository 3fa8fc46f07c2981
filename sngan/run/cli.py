"""Command lines outside Hydra: key=value options for sngan.sample and sngan.evaluate (one table
per command gives the parsing, the defaults, the checks and the --help text), and an argparse
parser for the scripts whose every refusal is one `error: ...` line."""

from __future__ import annotations

import argparse
import os
import sys

from sngan.config import Spec
from sngan.run.errors import UserError, describe_os_error, is_write_error, write_error_fix


def parse_args(argv: list[str], options: dict[str, tuple[str | None, str, Spec | None]], usage: str,
               about: str) -> dict:
    """`options`: key -> (default or None when required, help, Spec or None for free text).
    `--help` prints them and exits 0; an unknown key, a missing required one or a value its Spec
    refuses is a UserError (the usage repeated where it helps). Values come back parsed."""
    if any(item in ("-h", "--help", "help") for item in argv):
        width = max(len(key) + len(str(default)) for key, (default, _, _) in options.items()) + 3
        lines = [usage, "", about, ""]
        for key, (default, text, _) in options.items():
            shown = f"{key}={default if default is not None else key.upper()}"
            lines.append(f"  {shown:<{width}} {text}" + ("" if default is not None else " (required)"))
        try:
            print("\n".join(lines), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    given = {key: default for key, (default, _, _) in options.items()}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            raise UserError(f"unexpected argument {item!r}; {usage} (--help lists the keys)")
        given[key] = value
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise UserError(f"missing {', '.join(missing)}; {usage} (--help lists the keys)")
    return {key: value if options[key][2] is None else options[key][2].parse(key, value)
            for key, value in given.items()}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a refusal is one line on stderr (`error: ...; --help lists the options`), exit 2."""

    def error(self, message: str):
        print(f"error: {message}; {self.prog} --help lists the options", file=sys.stderr)
        sys.exit(2)


def refuse(error: UserError) -> None:
    """A user's mistake: its one line on stderr, exit code 2 (as the trainer and the scripts)."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def run_main(main) -> None:
    """Call a script's `main()`, turning a UserError, or a full or read-only disk, into one line on
    stderr and exit code 2."""
    try:
        main()
    except UserError as e:
        refuse(e)
    except OSError as e:
        if not is_write_error(e):
            raise
        print(f"error: cannot write {describe_os_error(e)}: {write_error_fix(e)}, then run it again", file=sys.stderr)
        sys.exit(2)
