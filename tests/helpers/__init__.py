"""What several test modules share, as plain importable modules (never another test module).

    runs.py         tiny_run(): THE builder of a random-init tiny GPT run directory; read_metrics()
    training.py     synthetic token shards and the environment for `python -m groklm` subprocesses
    preferences.py  the easy preference pairs the reward and DPO tests learn from
    models.py       Rigged: a model whose answers are known in advance
    servers.py      a real `groklm serve` process on loopback, shared by the server tests
    apps.py         the models the apps tests share (a random BPE run, a spam-tuned run, ...)
    rag.py          a predictable embedder, documents, a scripted OpenAI server, a hand-written PDF

Fixtures live in tests/conftest.py, where pytest finds them without an import. `pythonpath =
["tests"]` in pyproject.toml makes `from helpers.runs import tiny_run` work in every import mode.
"""
