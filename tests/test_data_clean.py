"""Data cleaning and provenance: duplicates, near duplicates, quality rules, boilerplate, the
removed samples, the manifest through `data prepare` and into a pretraining run, bad input."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from groklm.cli.main import main
from groklm.data.clean import CleanConfig, Cleaner, Document, clean_corpus, normalise, select_rules, shingles
from groklm.data.manifest import MANIFEST_FILE, RUN_MANIFEST_FILE, parse_licenses
from groklm.data.prepare import prepare
from groklm.data.quality import QUALITY_RULES, failed_rule, strip_boilerplate
from groklm.errors import ConfigError, DataError
from groklm.rundir import read_json
from groklm.train.pretrain import pretrain

from helpers.training import TINY, cli_env

REPO = Path(__file__).resolve().parent.parent
WORDS = ("river stone light morning garden window quiet letter winter summer friend house evening road "
         "mountain village bread water story music forest people simple careful bright gentle market "
         "teacher kitchen harbour journey season number answer question little ancient narrow golden "
         "silver wooden open walked carried found remembered thought listened waited returned spoke "
         "the a of and to in with from under over near").split()


def prose(n_words: int, seed: int) -> str:
    """Plain sentences of common words, twelve words to a line: text every quality rule passes."""
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(n_words)]
    lines = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, n_words, 12)]
    return "\n".join(lines)


def kept(config: CleanConfig, texts: list[str]) -> list[str]:
    return [d.text for d in Cleaner(config).clean(Document("corpus", Path("corpus.txt"), t) for t in texts)]


def jaccard(a: str, b: str) -> float:
    x, y = shingles(normalise(a)), shingles(normalise(b))
    return len(x & y) / len(x | y)


def write_records(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_exact_duplicates_are_the_same_text_up_to_case_whitespace_and_unicode_forms():
    text = prose(40, seed=1)
    variants = [text.upper(), "  " + text.replace(" ", " \n\t "), text.replace("a", "\uff41")]  # fullwidth a: NFKC
    other = prose(40, seed=2)
    assert kept(CleanConfig(rules=("exact_dup",)), [text, *variants, other]) == [text, other]


def test_near_duplicates_are_caught_at_the_threshold_and_unrelated_text_is_not():
    text = prose(240, seed=3)
    words = text.split(" ")
    for i in (40, 120, 200):  # three words changed, far apart
        words[i] = "changed"
    edited = " ".join(words)
    unrelated = prose(240, seed=4)
    assert 0.8 <= jaccard(text, edited) < 0.95 and jaccard(text, unrelated) < 0.1
    assert kept(CleanConfig(rules=("near_dup",)), [text, edited, unrelated]) == [text, unrelated]
    # The threshold decides: above the pair's similarity, the edited copy stays.
    assert kept(CleanConfig(rules=("near_dup",), near_dup_threshold=0.95), [text, edited]) == [text, edited]


def test_the_first_of_a_duplicate_cluster_is_kept():
    text, later = prose(200, seed=5), prose(200, seed=6)
    assert kept(CleanConfig(), [later, text, later.lower(), text]) == [later, text]


FAILING = {
    "words": "Far too short to learn from.",
    "word_length": "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "symbols": " ".join(w + (" |" if i % 4 == 3 else "") for i, w in enumerate(prose(40, seed=7).split(" "))),
    "digits": "Totals for the quarter were reported as follows " + " ".join(f"{n:06d}" for n in range(0, 60, 3)),
    "duplicate_lines": prose(60, seed=8) + "\n" + "\n".join(["Home and garden market news for the village every winter morning"] * 3),
    "repetition": "Buy fresh bread now from the market and " + "buy fresh bread " * 12 + "every single morning here.",
}


@pytest.mark.parametrize("rule", QUALITY_RULES)
def test_each_quality_rule_drops_the_text_it_is_for_and_only_that_rule_does(rule):
    text = FAILING[rule]
    assert failed_rule(text, set(QUALITY_RULES)) == rule
    assert failed_rule(text, set(QUALITY_RULES) - {rule}) is None
    assert failed_rule(prose(200, seed=9), set(QUALITY_RULES)) is None


def test_boilerplate_lines_are_cut_and_a_mostly_boilerplate_document_is_dropped():
    body = prose(60, seed=10)
    text = "Skip to main content\n" + body + "\nI do subscribe to that, said the teacher, and we will go.\n" \
           "Copyright 2024 Example Ltd. All rights reserved.\nWe use cookies. Read our cookie policy."
    cut, removed, mostly = strip_boilerplate(text)
    assert cut == body + "\nI do subscribe to that, said the teacher, and we will go."
    assert removed == ["Skip to main content", "Copyright 2024 Example Ltd. All rights reserved.",
                       "We use cookies. Read our cookie policy."]
    assert not mostly
    banner = "Click here to subscribe now!\nPrivacy policy | Terms of use\nWe use cookies.\nHello there, friend."
    assert strip_boilerplate(banner)[2]
    assert kept(CleanConfig(rules=("boilerplate",)), [text, banner]) == [cut]


def test_clean_writes_kept_documents_samples_and_a_manifest_that_adds_up(tmp_path):
    good = [prose(80, seed=s) for s in range(11, 15)]
    texts = [good[0], good[0].upper(), good[1], "Too short.", good[1] + " ", good[2], "Short too.", good[3]]
    source = write_records(tmp_path / "corpus.jsonl", texts)
    with pytest.warns(UserWarning, match="licence unknown for .*corpus.jsonl"):
        manifest = clean_corpus([str(source)], tmp_path / "out", CleanConfig(samples=1), progress=False)
    out = tmp_path / "out"
    records = [json.loads(line) for line in (out / "clean.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == good and {r["source"] for r in records} == {str(source)}
    assert [json.loads(line)["text"] for line in (out / "removed" / "words.jsonl").read_text().splitlines()] == ["Too short."]
    assert json.loads((out / "removed" / "exact_dup.jsonl").read_text())["text"] == good[0].upper()
    assert sorted(p.name for p in (out / "removed").iterdir()) == ["exact_dup.jsonl", "words.jsonl"]
    entry = manifest["sources"][0]
    assert entry["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest() == entry["files"][0]["sha256"]
    assert entry["license"] == "unknown" and entry["bytes"] == source.stat().st_size
    assert (entry["documents_in"], entry["documents_out"]) == (8, 4)
    assert entry["removed"]["exact_dup"]["documents"] == 2 and entry["removed"]["words"]["documents"] == 2
    assert sum(r["bytes"] for r in entry["removed"].values()) == entry["bytes_in"] - entry["bytes_out"]
    assert read_json(out / MANIFEST_FILE) == manifest and manifest["cleaning"]["near_dup_threshold"] == 0.8


def test_licences_per_source_and_for_all_and_unknown_ones_are_named(tmp_path):
    a, b, c = (write_records(tmp_path / f"{n}.jsonl", [prose(50, seed=i)]) for i, n in enumerate("abc"))
    specs = [str(a), str(b), str(c)]
    assert parse_licenses([f"{a}=MIT", "CC-BY-4.0"], specs) == {str(a): "MIT", str(b): "CC-BY-4.0", str(c): "CC-BY-4.0"}
    assert parse_licenses(["MIT"], ["pystdlib", str(a)]) == {"pystdlib": "PSF-2.0", str(a): "MIT"}
    assert parse_licenses(["pystdlib=other"], ["pystdlib"]) == {"pystdlib": "other"}
    with pytest.raises(ConfigError, match="not one of the SOURCEs"):
        parse_licenses(["elsewhere.txt=MIT"], specs)
    with pytest.raises(ConfigError, match="two licences"):
        parse_licenses(["MIT", "Apache-2.0"], specs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = clean_corpus(specs, tmp_path / "out", CleanConfig(), licenses=[f"{a}=MIT"], progress=False)
    [warning] = [str(w.message) for w in caught if "licence" in str(w.message)]
    assert str(b) in warning and str(c) in warning and str(a) not in warning
    assert [s["license"] for s in manifest["sources"]] == ["MIT", "unknown", "unknown"]


def test_settings_are_checked():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"--near-dup-threshold must be in \(0, 1\]"):
            CleanConfig(near_dup_threshold=bad)
    assert CleanConfig(near_dup_threshold=1.0).near_dup_threshold == 1.0
    with pytest.raises(ConfigError, match="unknown cleaning rule"):
        select_rules("words,spelling", [])
    assert select_rules(None, ["near_dup", "symbols"]) == ("boilerplate", "words", "word_length", "digits",
                                                          "duplicate_lines", "repetition", "exact_dup")
    assert select_rules("near_dup,words", []) == ("words", "near_dup")


def test_bad_input_leaves_no_output_directory(tmp_path):
    source = tmp_path / "corpus.jsonl"
    source.write_text(json.dumps({"text": prose(40, seed=1)}) + "\n" + json.dumps({"body": "no text field"}) + "\n")
    with pytest.raises(DataError, match=r'corpus.jsonl, line 2: expected a JSON object with a "text" string'):
        clean_corpus([str(source)], tmp_path / "out", CleanConfig(), licenses=["MIT"], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]  # no out/, no staged folder
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        clean_corpus([str(source)], tmp_path / "full", CleanConfig(), licenses=["MIT"], progress=False)


def test_prepare_cleans_writes_the_manifest_and_pretraining_copies_it(tmp_path):
    text = prose(400, seed=20)
    paragraphs = [prose(60, seed=s) for s in range(21, 27)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join([text, *paragraphs, paragraphs[0].lower(), "Click here. All rights reserved."]))
    data = tmp_path / "data"
    meta = prepare([str(corpus)], "char", data, val_fraction=0.2, progress=False, cleaning=CleanConfig(),
                   licenses=["CC0-1.0"], split_paragraphs=True)
    manifest = read_json(data / MANIFEST_FILE)
    assert meta["documents"] == 7 == manifest["totals"]["documents_out"]
    assert manifest["sources"][0]["license"] == "CC0-1.0" and manifest["cleaning"]["split_paragraphs"]
    assert manifest["sources"][0]["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert set(manifest["totals"]["removed"]) == {"exact_dup", "boilerplate"}
    assert (data / "removed" / "exact_dup.jsonl").is_file()

    run = pretrain(data, tmp_path / "run", overrides={**TINY, "max_iters": 2}, progress=False)
    assert (run / RUN_MANIFEST_FILE).read_bytes() == (data / MANIFEST_FILE).read_bytes()


def test_prepare_without_cleaning_still_records_provenance(tmp_path):
    records = write_records(tmp_path / "docs.jsonl", [prose(30, seed=1), prose(30, seed=1), prose(30, seed=2)])
    prepare([str(records)], "char", tmp_path / "data", val_fraction=0.0, progress=False, licenses=["MIT"],
            cleaning=CleanConfig())
    assert (tmp_path / "data" / "removed" / "exact_dup.jsonl").is_file()  # gone when prepared again without cleaning
    meta = prepare([str(records)], "char", tmp_path / "data", val_fraction=0.0, progress=False, licenses=["MIT"])
    manifest = read_json(tmp_path / "data" / MANIFEST_FILE)
    assert meta["documents"] == 3 and manifest["cleaning"] is None  # a .jsonl: one document per record
    assert manifest["sources"][0]["license"] == "MIT" and manifest["sources"][0]["removed"] == {}
    assert not (tmp_path / "data" / "removed").exists()


def test_cli_clean_reports_and_warns(tmp_path):
    source = write_records(tmp_path / "corpus.jsonl", [prose(60, seed=1), prose(60, seed=1).upper(), "Too short."])
    done = subprocess.run([sys.executable, "-m", "groklm", "data", "clean", str(source), "--out", str(tmp_path / "out"),
                           "--no-rule", "words"], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "kept 2 of 3 documents" in done.stdout and "exact_dup" in done.stdout
    assert f"warning: licence unknown for {source}" in done.stderr


def test_cli_refuses_bad_cleaning_settings(tmp_path, capsys):
    source = write_records(tmp_path / "corpus.jsonl", [prose(60, seed=1)])
    commands = {"--near-dup-threshold must be in (0, 1]": ["clean", str(source), "--out", str(tmp_path / "bad"),
                                                          "--near-dup-threshold", "0"],
                "--rules: cleaning settings, and cleaning is off: add --clean": [
                    "prepare", str(source), "--tokenizer", "char", "--out", str(tmp_path / "bad"), "--rules", "words"]}
    for message, command in commands.items():
        with pytest.raises(SystemExit) as stop:
            main(["data", *command])
        assert stop.value.code == 1 and message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
