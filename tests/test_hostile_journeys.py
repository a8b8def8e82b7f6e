"""The paths a newcomer takes with the tokenizer commands, as issue 17 found them broken.

Each test is one journey, run the way a user runs it (the CLI's main(), or a real process where
the terminal output itself is the point), and checked against an oracle nobody here wrote where
there is one: the `tokenizers` library for tokenizer.json files, transformers for a model folder,
the input text itself for what `decode` and `show` print.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402

import groklm.cli.tokenizer as tokenizer_cli  # noqa: E402
from groklm.errors import TokenizerError  # noqa: E402
from groklm.tokenizer import Conventions, Tokenizer, load_tokenizer  # noqa: E402
from groklm.tokenizer.chat import check_chat_template, render_chat, render_prompt, render_text  # noqa: E402
from groklm.tokenizer.visualize import render_tokens  # noqa: E402

from helpers.cli import run  # noqa: E402

tokenizers = pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[1]
ENGLISH = ("The cat sat on the mat. The dog sat on the log. Pack my box with five dozen liquor jugs!\n"
           "def f(x):\n    return x ** 2  # squares\n") * 60
WORLD = "Hello 日本語のテキスト, Съешь ещё этих булок, नमस्ते, ünïcödé, 🙂👩‍💻 and \tmore"




@pytest.fixture(scope="module")
def english_bpe(tmp_path_factory) -> Path:
    """A byte-level BPE that has seen only English: other scripts fall apart into byte tokens."""
    out = tmp_path_factory.mktemp("english")
    Tokenizer.train(ENGLISH, 300).save(out)
    return out


# ---- importing a Llama-2 / TinyLlama / Mistral style tokenizer.json -------------------------------

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def llama_tokenizer_json(byte_fallback: bool = True) -> str:
    """A tokenizer.json shaped like Llama 2's, TinyLlama's and Mistral's, made by `tokenizers`:
    normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer, a BPE with byte
    fallback whose vocabulary starts <unk>, <s>, </s>, <0x00>..<0xFF>, merges as "a b" strings,
    the decoder Sequence[Replace, ByteFallback, Fuse, Strip] and a post-processor adding <s>.
    Without byte fallback, a character the vocabulary lacks becomes <unk>."""
    from tokenizers import decoders, models, normalizers, trainers

    hf = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=byte_fallback, fuse_unk=True))
    hf.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    hf.decoder = decoders.Sequence([decoders.Replace("▁", " "), *[decoders.ByteFallback()] * byte_fallback,
                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    named = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)] if byte_fallback else []
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=named + byte_tokens, limit_alphabet=60,
                                  show_progress=False)
    hf.train_from_iterator((ENGLISH + WORLD).splitlines(), trainer)
    data = json.loads(hf.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in named]  # bytes are plain vocabulary
    data["model"]["merges"] = [" ".join(pair) for pair in data["model"]["merges"]]
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    return json.dumps(data, ensure_ascii=False)


def probe_texts() -> list[str]:
    rng = random.Random(17)
    pieces = ["the", " cat", "  ", " ", "\n", "\t", "日本", "語", "Съешь", "🙂", "ꙮ", "\x04", "▁", "é", "42", "!", "<s", "x"]
    return ["", " ", "  leading", "trailing  ", "▁hi", "a\x01b ꙮ", WORLD, *ENGLISH.splitlines()[:3],
            *("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(400))]


@pytest.mark.parametrize("byte_fallback", [True, False], ids=["byte-fallback", "unk"])
def test_a_llama_style_tokenizer_json_imports_and_encodes_as_tokenizers_does(tmp_path, capsys, byte_fallback):
    (tmp_path / "tokenizer.json").write_text(llama_tokenizer_json(byte_fallback), encoding="utf-8")
    code, out, err = run(capsys, "tokenizer", "import", str(tmp_path / "tokenizer.json"), "--out", str(tmp_path / "tok"))
    assert code == 0, err
    ours = load_tokenizer(tmp_path / "tok")
    oracle = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in probe_texts():
        ids = oracle.encode(text, add_special_tokens=False).ids
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == oracle.decode(ids, skip_special_tokens=False), text
    # Special-token text counts as special only where the caller allows it (tokenizers: always).
    text = "<s>[INST] hi [/INST] ok</s>"
    assert ours.encode(text, allowed_special="all") == oracle.encode(text, add_special_tokens=False).ids
    assert ours.conventions.eos_token == "</s>" and ours.conventions.bos_token == "<s>"


@pytest.mark.parametrize("template", [LLAMA2_TEMPLATE, MISTRAL_TEMPLATE], ids=["llama2", "mistral"])
def test_a_llama_style_model_folder_imports_as_a_run(tmp_path, capsys, template):
    """`groklm import FOLDER` of a Llama-2-chat / Mistral-Instruct shaped checkpoint. Their chat
    templates have no add_generation_prompt: the user turn ends with `[/INST]`, after which the
    model writes its reply, and that is a prompt as good as any."""
    transformers = pytest.importorskip("transformers")
    fast = transformers.LlamaTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_str(llama_tokenizer_json()),
                                           bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = template
    config = transformers.LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    fast.save_pretrained(tmp_path / "hf")

    code, out, err = run(capsys, "import", str(tmp_path / "hf"), "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "end token '</s>'" in out and "its own chat template" in out
    ours = load_tokenizer(tmp_path / "run" / "tokenizer")
    # The ids' oracle is the folder's tokenizer.json as `tokenizers` reads it (transformers 5
    # rebuilds a Llama tokenizer's normalizer instead of reading the file's, so it differs at the
    # edges, e.g. on " "); the rendered chat's oracle is transformers' apply_chat_template.
    oracle = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    for text in probe_texts()[:100]:
        assert ours.encode(text) == oracle.encode(text, add_special_tokens=False).ids, text
    question = [{"role": "user", "content": "What is two plus three?"}]
    text = render_text(ours, question, add_generation_prompt=True)
    assert text == transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").apply_chat_template(
        question, tokenize=False, add_generation_prompt=True)
    # The chat is tokenized piece by piece (chat.py), and no piece gets a "▁" of its own: the ids
    # decode to exactly the text that tokenizers decodes from its own ids of the whole rendering.
    conversation = [{"role": "system", "content": "Be brief."}] if template == LLAMA2_TEMPLATE else []
    conversation += [*question, {"role": "assistant", "content": "Five."}, {"role": "user", "content": "And 4+4?"}]
    for messages, prompt in ((question, True), (conversation, False)):
        whole = oracle.encode(render_text(ours, messages, add_generation_prompt=prompt), add_special_tokens=False).ids
        ids = render_prompt(ours, messages) if prompt else render_chat(ours, messages)[0]
        assert oracle.decode(ids, skip_special_tokens=False) == oracle.decode(whole, skip_special_tokens=False)
    assert ours.decode(render_prompt(ours, question)).endswith("[/INST]")


@pytest.mark.parametrize("template", [
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}",  # forgets to open the reply
    "{% for m in messages %}{{ m['content'] }}{% endfor %}",  # no markup at all: contents run together
], ids=["forgot-to-open", "no-markup"])
def test_templates_without_a_place_for_the_reply_are_still_refused(tmp_path, template):
    """What the check is for: a prompt after which a model would have to write its turn's markup,
    or nothing at all marks where the user stops and the reply begins."""
    ours = load_tokenizer_json(tmp_path)
    with pytest.raises(TokenizerError, match="no assistant role"):
        check_chat_template(ours.with_conventions(Conventions(eos_token="</s>", chat_template=template)))


def load_tokenizer_json(tmp_path: Path):
    (tmp_path / "tokenizer.json").write_text(llama_tokenizer_json(), encoding="utf-8")
    return load_tokenizer(tmp_path / "tokenizer.json")


# ---- training on a directory with binary files, and on a named corpus ---------------------------


def source_tree(root: Path) -> Path:
    """A project folder as people have them: text, compiled and binary files, a pipe, a dangling link."""
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "README.md").write_text(ENGLISH, encoding="utf-8")
    (root / "pkg" / "mod.py").write_text("def f(x):\n    return x * 2  # twice\n" * 40, encoding="utf-8")
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\xa7\r\r\n\x00\x00\x00\x00" + bytes(range(256)) * 4)
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    (root / "notes-latin1.txt").write_bytes("café crème brûlée\n".encode("latin-1") * 10)
    os.mkfifo(root / "pipe")  # not files: reading a pipe would wait for a writer forever
    (root / "gone.txt").symlink_to(root / "deleted.txt")
    return root


def test_tokenizer_train_skips_files_that_are_not_text_and_counts_them(tmp_path, capsys):
    tree = source_tree(tmp_path / "tree")
    with pytest.warns(UserWarning, match=r"tree: skipped 3 of 5 files that are not text: 2 binary, 1 not valid "
                                         r"UTF-8 .*--errors replace.*\(logo.png, notes-latin1.txt, mod.cpython-311.pyc\)"):
        code, out, err = run(capsys, "tokenizer", "train", "--no-progress", "--input", str(tree), "--vocab-size", "300",
                             "--out", str(tmp_path / "tok"))
    assert code == 0, err
    texts = [tree / "README.md", tree / "pkg" / "mod.py"]
    assert load_tokenizer(tmp_path / "tok").merges == Tokenizer.train(texts, 300).merges  # exactly the text files

    # --errors replace reads the Latin-1 notes (with U+FFFD); binary files are still skipped.
    with pytest.warns(UserWarning) as caught:
        code, _, err = run(capsys, "tokenizer", "train", "--no-progress", "--input", str(tree), "--vocab-size", "300",
                           "--errors", "replace", "--out", str(tmp_path / "tok2"), "--type", "char")
    assert code == 0, err
    messages = [str(w.message) for w in caught]
    assert any("skipped 2 of 5 files that are not text: 2 binary (" in m for m in messages), messages
    assert any("notes-latin1.txt: 40 invalid UTF-8" in m for m in messages), messages

    # A file named on its own is what the user asked for: a binary one is refused, not skipped.
    code, _, err = run(capsys, "tokenizer", "train", "--no-progress", "--input", str(tree / "logo.png"),
                       "--vocab-size", "300", "--out", str(tmp_path / "tok3"))
    assert code == 1 and "logo.png is a binary file (a NUL byte at offset 8)" in err and "Traceback" not in err


def test_tokenizer_train_reads_a_pipe_as_a_file(tmp_path):
    """`--input <(zcat corpus.gz)`: a pipe can be read once only, so nothing may peek at it first."""
    (tmp_path / "corpus.txt").write_text(ENGLISH, encoding="utf-8")
    script = (f"{sys.executable} -m groklm tokenizer train --no-progress --vocab-size 300 "
              f"--input <(cat {tmp_path / 'corpus.txt'}) --out {tmp_path / 'tok'}")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert load_tokenizer(tmp_path / "tok").merges == Tokenizer.train(tmp_path / "corpus.txt", 300).merges


def test_tokenizer_train_takes_the_corpus_names_that_data_prepare_takes(tmp_path, capsys, monkeypatch):
    from groklm.data import sources

    assert tokenizer_cli.NAMED_CORPORA == sources.NAMED_CORPORA
    few = sources.pystdlib_files()[:12]  # the real resolver, on a corner of the standard library
    monkeypatch.setattr(sources, "pystdlib_files", lambda: few)
    code, out, err = run(capsys, "tokenizer", "train", "--no-progress", "--input", "pystdlib", "--vocab-size", "400",
                         "--out", str(tmp_path / "tok"))
    assert code == 0, err
    assert load_tokenizer(tmp_path / "tok").merges == Tokenizer.train(few, 400).merges


# ---- what decode and show print ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["no newline at the end", "one newline\n", "two\n\n", "  spaces  ", WORLD])
def test_decode_prints_exactly_the_text(english_bpe, capsys, text):
    ids = load_tokenizer(english_bpe).encode(text)
    code, out, err = run(capsys, "tokenizer", "decode", "--tokenizer", str(english_bpe), *map(str, ids))
    assert code == 0, err
    assert out == text


@pytest.mark.parametrize("ids", ["1.5", "[1, true]", "[[1]]", "0x10"])
def test_decode_refuses_what_is_not_a_token_id(english_bpe, capsys, ids):
    code, out, err = run(capsys, "tokenizer", "decode", "--tokenizer", str(english_bpe), ids)
    assert code == 1 and out == "" and "decode expects integer token ids" in err


def test_show_renders_every_script_as_itself(english_bpe, capsys):
    code, out, err = run(capsys, "tokenizer", "show", "--no-color", "--tokenizer", str(english_bpe), WORLD)
    assert code == 0, err
    shown, labels, summary = out.split("\n")[:3]
    # Every character as itself; the invisible ones (the tab, the zero-width joiner in 👩‍💻) as escapes.
    assert shown.replace("|", "") == WORLD.replace("\t", "\\t").replace("\u200d", "\\u200d")
    assert "\\x" not in out
    # Characters this tokenizer has no token for are split over byte tokens: those share a cell.
    tokenizer = load_tokenizer(english_bpe)
    ids = tokenizer.encode(WORLD)
    assert sum(len(label.split("+")) for label in labels.split()) == len(ids)
    assert len(shown.split("|")) - 2 == len(labels.split()) < len(ids)
    assert summary.startswith(f"{len(ids)} tokens")


def test_show_escapes_only_what_a_terminal_cannot_show(english_bpe):
    tokenizer = load_tokenizer(english_bpe)
    invisible = "a\x01b\u00a0c\u200bd"
    assert render_tokens(tokenizer, tokenizer.encode(invisible), color=False).split("\n")[0].replace("|", "") == (
        "a\\u0001b\\u00a0c\\u200bd")
    cut = tokenizer.encode("日")[:-1]  # a text that stops in the middle of a character
    assert render_tokens(tokenizer, cut, color=False).split("\n")[0] == "|" + "".join(
        f"\\x{b:02x}" for b in tokenizer.decode_bytes(cut)) + "|"


# ---- warnings --------------------------------------------------------------------------------------


def test_cli_warnings_are_one_line_without_python_internals(tmp_path):
    tree = source_tree(tmp_path / "tree")
    done = subprocess.run(
        [sys.executable, "-m", "groklm", "tokenizer", "train", "--no-progress", "--input", str(tree),
         "--vocab-size", "300", "--out", str(tmp_path / "tok")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"warning: {tree}: skipped 3 of 5 files that are not text"), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert "UserWarning" not in done.stderr and ".py:" not in done.stderr
