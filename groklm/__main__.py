"""`python -m groklm ...` (what torchrun launches) is the same CLI as `groklm ...`."""

from groklm.cli.main import main

if __name__ == "__main__":
    main()
