"""The command line: the top layer. `main.py` builds the parser; one module per command family.

Only here may an import sit inside a function: each handler imports what it runs, so building
the parser (and `groklm --help`) never loads torch.
"""
