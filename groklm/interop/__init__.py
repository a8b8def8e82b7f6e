"""Interoperability: models and tokenizers from elsewhere become run directories, and back.

    imports.py       `import_run(source, run)`: one entry for every source (a GGUF file, a
                     local Hugging Face folder, `hf:ORG/NAME`, the packaged smollm2-135m-instruct)
    gguf.py          GGUF files (llama.cpp, ollama, LM Studio) -> our GPT and tokenizer
    gguf_export.py   a run -> one GGUF file (`groklm export RUN --to gguf OUT.gguf`)
    hf.py            Hugging Face tensor-name and config mapping; export_run
    hf_tokenizer.py  tokenizers (and their conventions) to and from an HF tokenizer.json folder

The commands (`groklm export`, `groklm import`) are in groklm/cli/interop.py.
"""
