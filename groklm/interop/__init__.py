"""Interoperability: models and tokenizers to and from Hugging Face `transformers` checkpoints.

    hf.py            tensor-name and config mapping; export_run / import_run (the CLI's work)
    hf_tokenizer.py  our tokenizers written as an HF tokenizer.json
    commands.py      `groklm export` and `groklm import`

Nothing is imported here, so `groklm --help` does not pay for torch.
"""
