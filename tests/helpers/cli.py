"""Running the command line in-process, as a user would from a shell."""

from __future__ import annotations

import groklm.cli.main as cli


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """`groklm ARGV...` -> (exit status, stdout, stderr)."""
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
