"""Data preparation: sources, named corpora (offline), token shards, batches, bad input."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from groklm.data import sources
from groklm.data.prepare import prepare
from groklm.data.shards import META_FILE, ShardWriter, TokenShards, batch_offsets, dtype_for_vocab, get_batch
from groklm.errors import ConfigError, DataError, TokenizerError
from groklm.rundir import write_json
from groklm.tokenizer import CharTokenizer, Tokenizer, load_tokenizer

REPO = Path(__file__).resolve().parent.parent
SHARED_SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests never download: any attempt to open a non-file URL fails loudly."""
    real = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        if not str(getattr(url, "full_url", url)).startswith("file:"):
            raise AssertionError(f"a test tried to download {url}")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


def tokens_of(data_dir: Path) -> np.ndarray:
    shards = TokenShards(data_dir)
    return np.concatenate([shards.train, shards.val]).astype(np.int64)


def test_char_prepare_round_trips_the_text(tmp_path):
    (tmp_path / "input.txt").write_text(TEXT)
    meta = prepare([str(tmp_path / "input.txt")], "char", tmp_path / "data", val_fraction=0.1, progress=False)
    tokenizer = load_tokenizer(tmp_path / "data" / "tokenizer")
    assert isinstance(tokenizer, CharTokenizer)
    assert meta["vocab_size"] == tokenizer.vocab_size == len(set(TEXT)) + 3
    assert meta["dtype"] == "uint16" and meta["tokenizer"] == "char" and meta["documents"] == 1
    assert meta["train_tokens"] + meta["val_tokens"] == len(TEXT)
    assert meta["val_tokens"] == round(len(TEXT) * 0.1)
    assert tokenizer.decode(tokens_of(tmp_path / "data").tolist()) == TEXT


def test_val_split_is_the_tail_of_the_stream(tmp_path):
    writer = ShardWriter(tmp_path, np.uint16)
    writer.write(np.arange(60))
    writer.write(np.arange(60, 100))
    assert writer.finish(0.1) == (90, 10)
    assert np.fromfile(tmp_path / "train.bin", np.uint16).tolist() == list(range(90))
    assert np.fromfile(tmp_path / "val.bin", np.uint16).tolist() == list(range(90, 100))


def test_directories_are_read_recursively_in_path_order_skipping_binary_and_hidden(tmp_path):
    corpus = tmp_path / "corpus"
    for name, text in {"b/two.txt": "second", "a.txt": "first", "b/c/three.md": "third", ".git/HEAD": "hidden"}.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(text)
    (corpus / "image.bin").write_bytes(b"\x89PNG\x00\x01\x02")
    (corpus / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))  # not UTF-8: skipped
    with pytest.warns(UserWarning, match=r"skipped 2 of 5 files that are not text \(binary, or not valid UTF-8\): image.bin, latin1.txt"):
        meta = prepare([str(corpus)], "char", tmp_path / "data", val_fraction=0.0, progress=False)
    tokenizer = load_tokenizer(tmp_path / "data" / "tokenizer")
    assert tokenizer.decode(tokens_of(tmp_path / "data").tolist()) == "first<|endoftext|>third<|endoftext|>second"
    assert meta["documents"] == 3 and meta["sources"][0]["files"] == 5


def test_bpe_prepare_separates_documents_with_endoftext(tmp_path):
    tokenizer = Tokenizer.train([TEXT], vocab_size=300)
    tokenizer.save(tmp_path / "tok")
    (tmp_path / "one.txt").write_text("hear me speak")
    (tmp_path / "two.txt").write_text("All: Speak, speak.")
    meta = prepare([str(tmp_path / "one.txt"), str(tmp_path / "two.txt")], str(tmp_path / "tok"), tmp_path / "data", 0.0, progress=False)
    ids = tokens_of(tmp_path / "data").tolist()
    eot = tokenizer.eot_id
    assert ids == tokenizer.encode("hear me speak") + [eot] + tokenizer.encode("All: Speak, speak.")
    assert meta["tokenizer"] == "bpe" and meta["eot_id"] == eot and meta["vocab_size"] == 300
    assert load_tokenizer(tmp_path / "data" / "tokenizer").encode("speak") == tokenizer.encode("speak")


def test_shard_dtype_follows_the_vocab(tmp_path):
    assert dtype_for_vocab(65536) == np.uint16 and dtype_for_vocab(65537) == np.uint32
    writer = ShardWriter(tmp_path, dtype_for_vocab(100_000))
    writer.write([0, 70_000, 99_999, 5])
    n_train, n_val = writer.finish(0.5)
    write_json(tmp_path / META_FILE, {"vocab_size": 100_000, "dtype": "uint32", "train_tokens": n_train, "val_tokens": n_val})
    shards = TokenShards(tmp_path)
    assert shards.train.tolist() == [0, 70_000] and shards.val.tolist() == [99_999, 5]
    with pytest.raises(DataError, match="out of range"):
        ShardWriter(tmp_path / "small", np.uint16).write([70_000])


def test_batches_are_a_function_of_seed_and_step():
    tokens = np.arange(1000, dtype=np.uint16)
    a = batch_offsets(1, 5, 8, len(tokens), 16)
    assert (a == batch_offsets(1, 5, 8, len(tokens), 16)).all()
    assert not (a == batch_offsets(1, 6, 8, len(tokens), 16)).all()
    assert not (a == batch_offsets(1, 5, 8, len(tokens), 16, stream=1)).all()
    assert a.min() >= 0 and a.max() + 16 < len(tokens)
    x, y = get_batch(tokens, a, 16)
    assert x.shape == y.shape == (8, 16) and str(x.dtype) == "torch.int64"
    assert (x[:, 1:] == y[:, :-1]).all() and (x[:, 0] == a).all().item()


# ---- named corpora --------------------------------------------------------------------------


def test_pystdlib_is_real_sorted_python_source():
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    files = sources.pystdlib_files()
    relative = [f.relative_to(root).as_posix() for f in files]
    assert len(files) > 100 and relative == sorted(relative) and files == sources.pystdlib_files()
    assert all(f.suffix == ".py" for f in files) and "random.py" in relative
    assert not any({"test", "tests", "site-packages"} & set(f.relative_to(root).parts) for f in files)


def test_checksum_accepts_the_right_file_and_rejects_others(tmp_path):
    good = tmp_path / "corpus.txt"
    good.write_text("to be or not to be")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    sources.check_sha256(good, digest)
    with pytest.raises(DataError, match="sha256"):
        sources.check_sha256(good, "0" * 64)


def test_fetch_verifies_before_the_file_appears(tmp_path):
    origin = tmp_path / "origin.txt"
    origin.write_text("a small corpus")
    digest = hashlib.sha256(origin.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "corpus.txt"
    with pytest.raises(DataError, match="sha256"):
        sources.fetch(origin.as_uri(), dest, "f" * 64)
    assert not dest.exists() and not list(dest.parent.iterdir())  # no partial file left behind
    assert sources.fetch(origin.as_uri(), dest, digest).read_text() == "a small corpus"
    origin.unlink()  # the second call is served from the cache
    assert sources.fetch(origin.as_uri(), dest, digest) == dest
    with pytest.raises(DataError, match="could not download"):
        sources.fetch(origin.as_uri(), tmp_path / "cache" / "other.txt", digest)


def test_shakespeare_rejects_a_local_file_that_is_not_it(tmp_path, monkeypatch):
    fake = tmp_path / "input.txt"
    fake.write_text("not shakespeare")
    with pytest.raises(DataError, match="sha256"):
        sources.shakespeare_file(fake)
    monkeypatch.setenv("GROKLM_SHAKESPEARE", str(fake))
    with pytest.raises(DataError, match="sha256"):
        sources.resolve("shakespeare")
    monkeypatch.delenv("GROKLM_SHAKESPEARE")
    monkeypatch.setenv("GROKLM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / sources.SHAKESPEARE_FILE).write_text("truncated")  # a bad cached copy
    with pytest.raises(DataError, match="sha256"):
        sources.shakespeare_file()


@pytest.mark.skipif(not SHARED_SHAKESPEARE.is_file(), reason="no local Tiny Shakespeare")
def test_shakespeare_from_a_local_copy_and_from_the_cache(tmp_path, monkeypatch):
    assert sources.shakespeare_file(SHARED_SHAKESPEARE) == SHARED_SHAKESPEARE
    monkeypatch.setenv("GROKLM_CACHE", str(tmp_path))
    (tmp_path / sources.SHAKESPEARE_FILE).write_bytes(SHARED_SHAKESPEARE.read_bytes())
    assert sources.resolve("shakespeare").files == [tmp_path / sources.SHAKESPEARE_FILE]


# ---- bad input ------------------------------------------------------------------------------


def test_bad_sources_and_settings(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "x.bin").write_bytes(b"\x00\x01")
    (tmp_path / "ok.txt").write_text("hello")
    with pytest.raises(DataError, match="not a file, a directory"):
        prepare(["no/such/thing"], "char", tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="holds no files"):
        prepare([str(tmp_path / "empty")], "char", tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="empty"), pytest.warns(UserWarning, match="skipped 1 of 1 files that are not text"):
        prepare([str(tmp_path / "binary")], "char", tmp_path / "out", progress=False)
    with pytest.raises(TokenizerError, match="does not exist"):
        prepare([str(tmp_path / "ok.txt")], str(tmp_path / "no-tokenizer"), tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="val-fraction"):
        prepare([str(tmp_path / "ok.txt")], "char", tmp_path / "out", val_fraction=1.0, progress=False)
    with pytest.raises(DataError, match="does not exist"):
        TokenShards(tmp_path / "nowhere")
    with pytest.raises(DataError, match="not a prepared data directory"):
        TokenShards(tmp_path / "empty")


def test_cli_prepare(tmp_path):
    (tmp_path / "input.txt").write_text(TEXT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cli = [sys.executable, "-m", "groklm", "data", "prepare"]
    ok = subprocess.run([*cli, str(tmp_path / "input.txt"), "--tokenizer", "char", "--out", str(tmp_path / "data")],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "train" in ok.stdout and (tmp_path / "data" / "meta.json").is_file()
    bad = subprocess.run([*cli, str(tmp_path / "missing.txt"), "--tokenizer", "char", "--out", str(tmp_path / "x")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "groklm: error:" in bad.stderr and "Traceback" not in bad.stderr


def test_prepared_char_data_trains_and_the_run_keeps_the_tokenizer(tmp_path):
    import torch

    from groklm.infer.decode import generate
    from groklm.model import GPT
    from groklm.train.pretrain import pretrain

    (tmp_path / "input.txt").write_text(TEXT)
    prepare([str(tmp_path / "input.txt")], "char", tmp_path / "data", progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = pretrain(tmp_path / "data", tmp_path / "run", preset="shakespeare-char", progress=False,
                       overrides={"max_iters": 3, "eval_iters": 1, "n_layer": 1, "n_embd": 32, "block_size": 32, "device": "cpu"})
    finally:
        torch.set_num_threads(threads)
    tokenizer = load_tokenizer(run / "tokenizer")
    model = GPT.from_run(run)
    assert model.config.vocab_size >= tokenizer.vocab_size
    out = generate(model, torch.tensor([tokenizer.encode("First")]), max_new_tokens=5, seed=0)
    assert len(tokenizer.decode(out[0].tolist())) == 10
