"""key=value command lines for sngan.sample and sngan.evaluate: one table of options per command
gives the parsing, the defaults and the --help text."""

from __future__ import annotations

import os
import sys

from sngan.errors import UserError


def parse_args(argv: list[str], options: dict[str, tuple[str | None, str]], usage: str, about: str) -> dict:
    """`options`: key -> (default or None when required, help). `--help` prints them and exits 0;
    an unknown key or a missing required one is a UserError that repeats the usage."""
    if any(item in ("-h", "--help", "help") for item in argv):
        width = max(len(key) + len(str(default)) for key, (default, _) in options.items()) + 3
        lines = [usage, "", about, ""]
        for key, (default, text) in options.items():
            shown = f"{key}={default if default is not None else key.upper()}"
            lines.append(f"  {shown:<{width}} {text}" + ("" if default is not None else " (required)"))
        try:
            print("\n".join(lines), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    args = {key: default for key, (default, _) in options.items()}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            raise UserError(f"unexpected argument {item!r}; {usage} (--help lists the keys)")
        args[key] = value
    missing = [k for k, v in args.items() if v is None]
    if missing:
        raise UserError(f"missing {', '.join(missing)}; {usage} (--help lists the keys)")
    return args


def positive_int(args: dict, key: str, minimum: int = 1) -> int:
    """args[key] as an integer >= minimum, else a UserError naming the key."""
    try:
        value = int(args[key])
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum:
        raise UserError(f"{key} must be an integer >= {minimum}, got {args[key]!r}")
    return value
