"""A Hugging Face model directory's tokenizer comes in with its conventions (`read_hf_tokenizer`), and
what `write_hf_tokenizer` writes comes back the same and loads in transformers."""

from __future__ import annotations

import json
import warnings

import pytest

from groklm.errors import TokenizerError
from groklm.interop.hf_tokenizer import read_hf_tokenizer, write_hf_tokenizer
from groklm.tokenizer import Conventions, Tokenizer

tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["<|endoftext|>", "<|begin|>", "<|eot|>", "<|eom|>"]
TEMPLATE = "{% for m in messages %}<|begin|>{{ m['role'] }}\n{{ m['content'] }}<|eot|>{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer_json() -> str:
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    hf.train_from_iterator(["Hello there, how are you? I am fine, thank you. " * 20], trainer)
    return hf.to_str()


def model_dir(tmp_path, tokenizer_json, config=None, generation=None, files=None):
    (tmp_path / "tokenizer.json").write_text(tokenizer_json)
    if config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    if generation is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_conventions_from_tokenizer_config(tmp_path, tokenizer_json):
    config = {
        "bos_token": {"__type": "AddedToken", "content": "<|begin|>", "lstrip": False, "normalized": False},
        "eos_token": "<|eot|>",
        "chat_template": [{"name": "tool_use", "template": "tools!"}, {"name": "default", "template": TEMPLATE}],
    }
    directory = model_dir(tmp_path, tokenizer_json, config, generation={"eos_token_id": [2, 3, 0]})
    for where in (directory, directory / "tokenizer.json"):
        tok = read_hf_tokenizer(where)
        assert tok.conventions == Conventions(eos_token="<|eot|>", bos_token="<|begin|>", chat_template=TEMPLATE,
                                              stop_tokens=("<|eom|>", "<|endoftext|>"))
        assert tok.special_tokens == {name: i for i, name in enumerate(SPECIALS)}
        assert tok.vocab_size == len(json.loads(tokenizer_json)["model"]["vocab"])  # nothing added


def test_chat_template_files_win(tmp_path, tokenizer_json):
    config = {"eos_token": "<|eot|>", "chat_template": "old"}
    directory = model_dir(tmp_path, tokenizer_json, config, files={"chat_template.json": json.dumps({"chat_template": "json"})})
    assert read_hf_tokenizer(directory).conventions.chat_template == "json"
    (directory / "chat_template.jinja").write_text(TEMPLATE)
    assert read_hf_tokenizer(directory).conventions.chat_template == TEMPLATE


def test_no_config_guesses_the_end_token(tmp_path, tokenizer_json):
    tok = read_hf_tokenizer(model_dir(tmp_path, tokenizer_json))
    assert tok.conventions == Conventions() and tok.eot_id == 0
    # generation_config.json alone names it
    tok = read_hf_tokenizer(model_dir(tmp_path, tokenizer_json, generation={"eos_token_id": 2}))
    assert tok.conventions.eos_token == "<|eot|>" and tok.conventions.stop_tokens == ()


def test_bad_directories(tmp_path, tokenizer_json):
    directory = model_dir(tmp_path, tokenizer_json, {"eos_token": "<|nowhere|>"})
    with pytest.raises(TokenizerError, match="nowhere"):
        read_hf_tokenizer(directory)
    model_dir(tmp_path, tokenizer_json, {"chat_template": [{"name": "rag", "template": "x"}]})
    with pytest.raises(TokenizerError, match="none named 'default'"):
        read_hf_tokenizer(directory)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer_config.json"):
        read_hf_tokenizer(directory)


def test_export_then_import_round_trips_conventions(tmp_path):
    tok = Tokenizer.train("Hello there, how are you? " * 30, 278, special_tokens=["<|eom|>"])
    conventions = Conventions(eos_token="<|im_end|>", bos_token="<|im_start|>", chat_template=TEMPLATE.replace("begin", "im_start"),
                              stop_tokens=("<|eom|>",))
    tok.with_conventions(conventions)
    write_hf_tokenizer(tok, tmp_path / "hf", 64)
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps({"eos_token_id": [tok.special_tokens["<|im_end|>"],
                                                                                         tok.special_tokens["<|eom|>"]]}))
    back = read_hf_tokenizer(tmp_path / "hf")
    assert back.conventions == conventions
    assert back.special_tokens == tok.special_tokens
    assert back.encode("Hello <|im_end|> there", allowed_special="all") == tok.encode("Hello <|im_end|> there", allowed_special="all")
    # groklm's own conventions: <|endoftext|> ends a text, nothing begins one, ChatML is built in
    plain = Tokenizer.train("Hello there, how are you? " * 30, 277)
    write_hf_tokenizer(plain, tmp_path / "plain", 64)
    config = json.loads((tmp_path / "plain" / "tokenizer_config.json").read_text())
    assert (config["bos_token"], config["eos_token"]) == (None, "<|endoftext|>") and "chat_template" not in config
    assert read_hf_tokenizer(tmp_path / "plain").conventions == Conventions()


def test_transformers_reads_the_exported_template(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = Tokenizer.train("Hello there, how are you? " * 30, 277)
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    tok.with_conventions(Conventions(eos_token="<|im_end|>", chat_template=template))
    write_hf_tokenizer(tok, tmp_path, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    messages = [{"role": "user", "content": "Hello there"}]
    assert hf.apply_chat_template(messages, tokenize=False) == "<|im_start|>user\nHello there<|im_end|>\n"
    assert hf.eos_token == "<|im_end|>"
    ids = hf.apply_chat_template(messages, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids == tok.encode("<|im_start|>user\nHello there<|im_end|>\n", allowed_special="all")
