"""Interoperability: models and tokenizers to and from Hugging Face `transformers` checkpoints.

    hf.py            tensor-name and config mapping; export_run / import_run (the CLI's work)
    hf_tokenizer.py  our tokenizers written as an HF tokenizer.json

The commands (`groklm export`, `groklm import`) are in groklm/cli/interop.py.
"""
