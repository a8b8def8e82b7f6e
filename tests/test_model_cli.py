"""The model-facing commands end to end: sample, attention, export and import, through the CLI."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from groklm.cli.main import main  # noqa: E402
from groklm.infer.decode import generate  # noqa: E402
from groklm.model.config import GPTConfig  # noqa: E402
from groklm.model.gpt import GPT  # noqa: E402
from groklm.model.weights import save_weights
from groklm.rundir import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE, write_json  # noqa: E402
from groklm.tokenizer import Tokenizer  # noqa: E402

from helpers.runs import tiny_run  # noqa: E402

CORPUS = ("Once upon a time there was a tiny model. It liked café au lait, 東京, and 🙂 emoji.\n") * 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny random-init run with a BPE trained on a few sentences: no training loop needed."""
    return tiny_run(tmp_path_factory.mktemp("run"), Tokenizer.train(CORPUS, 300), block_size=32, n_layer=2, n_head=4,
                    n_kv_head=2, n_embd=32, pos="rope", norm="rmsnorm", mlp="swiglu", bias=False)


def groklm(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `groklm ARGV...`; returns (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


# ---- sample ------------------------------------------------------------------------------


def sample(capsys, run_dir, *extra: str) -> str:
    code, out, err = groklm(capsys, "sample", run_dir, "--prompt", "Once upon", "--max-new-tokens", "40",
                            "--device", "cpu", *extra)
    assert code == 0, err
    return out


def test_sample_same_seed_same_text(capsys, run_dir):
    first = sample(capsys, run_dir, "--seed", "3", "--temperature", "1.0")
    second = sample(capsys, run_dir, "--seed", "3", "--temperature", "1.0")
    other = sample(capsys, run_dir, "--seed", "4", "--temperature", "1.0")
    assert first == second
    assert first != other
    assert first.startswith("Once upon") and len(first) > len("Once upon\n")


def test_sample_streams_exactly_the_decoded_tokens(capsys, run_dir, monkeypatch):
    """The pieces printed one by one add up to decoding all sampled ids at once: a character
    whose bytes are split over tokens is printed whole, never as replacement garbage."""
    from groklm.cli import model as model_cli

    pieces: list[str] = []
    monkeypatch.setattr(model_cli, "write", pieces.append)
    code, _, err = groklm(capsys, "sample", run_dir, "--prompt", "café", "--max-new-tokens", "60",
                          "--seed", "11", "--top-k", "200", "--device", "cpu")
    assert code == 0, err

    model = GPT.from_run(run_dir)
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_DIR)
    prompt = torch.tensor([tokenizer.encode("café")])
    new = generate(model, prompt, 60, top_k=200, seed=11)[0, prompt.size(1):].tolist()
    if tokenizer.eot_id in new:
        new = new[: new.index(tokenizer.eot_id)]
    assert pieces[0] == "café"
    assert "".join(pieces[1:]) == tokenizer.decode(new) + "\n"


def test_sample_greedy_and_empty_prompt(capsys, run_dir):
    greedy = sample(capsys, run_dir, "--temperature", "0")
    assert greedy == sample(capsys, run_dir, "--temperature", "0", "--seed", "99")  # the seed is irrelevant
    code, out, err = groklm(capsys, "sample", run_dir, "--max-new-tokens", "5", "--seed", "1", "--device", "cpu")
    assert code == 0, err


def test_sample_errors_are_messages_not_tracebacks(capsys, run_dir, tmp_path):
    code, _, err = groklm(capsys, "sample", tmp_path / "missing", "--prompt", "x")
    assert code == 1 and err.startswith("groklm: error:") and "Traceback" not in err
    code, _, err = groklm(capsys, "sample", run_dir, "--prompt", "x", "--top-p", "1.5", "--device", "cpu")
    assert code == 1 and "top_p" in err


# ---- attention ---------------------------------------------------------------------------


def test_attention_writes_one_png_per_layer(capsys, run_dir, tmp_path):
    code, out, err = groklm(capsys, "attention", run_dir, "--text", "Once upon a time 🙂")
    assert code == 0, err
    default = sorted((run_dir / "attention").glob("*.png"))
    assert [p.name for p in default] == ["layer_00.png", "layer_01.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in default)

    code, out, err = groklm(capsys, "attention", run_dir, "--text", "x" * 200, "--out", tmp_path / "maps")
    assert code == 0, err
    assert "drawing the first 32" in err  # longer than block_size: cut, and said so
    assert len(list((tmp_path / "maps").glob("layer_*.png"))) == 2

    code, _, err = groklm(capsys, "attention", run_dir, "--text", "")
    assert code == 1 and "empty" in err


def test_token_labels_show_whitespace_and_partial_bytes(run_dir):
    from groklm.model.heatmap import token_labels

    tokenizer = Tokenizer.load(run_dir / TOKENIZER_DIR)
    labels = token_labels(tokenizer, [ord(" "), ord("\n"), 0xE6])
    assert labels == ["\u2423", "\u21b5", "\\xe6"]


# ---- export and import through the CLI ---------------------------------------------------


def test_export_and_import_commands(capsys, run_dir, tmp_path):
    pytest.importorskip("transformers")
    code, out, err = groklm(capsys, "export", run_dir, "--to", "hf", tmp_path / "hf")
    assert code == 0, err
    assert "LlamaForCausalLM" in out
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in (tmp_path / "hf").iterdir()
    }
    code, out, err = groklm(capsys, "import", tmp_path / "hf", "--out", tmp_path / "back")
    assert code == 0, err
    assert "2 layers" in out
    # The imported run is an ordinary run: sample from it.
    assert sample(capsys, tmp_path / "back", "--seed", "3") == sample(capsys, run_dir, "--seed", "3")


def test_export_refusal_is_a_clear_error(capsys, tmp_path):
    config = GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16, pos="sinusoidal")
    write_json(tmp_path / CONFIG_FILE, {"model": config.to_dict()})
    save_weights(GPT(config), tmp_path / WEIGHTS_FILE)
    code, _, err = groklm(capsys, "export", tmp_path, "--to", "hf", tmp_path / "hf")
    assert code == 1 and "pos=sinusoidal" in err and "Exportable shapes" in err
