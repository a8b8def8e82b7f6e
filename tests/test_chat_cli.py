"""`groklm chat`: history and commands driven by piped lines, context trimming, the command."""

from __future__ import annotations

import io

import pytest

from groklm.apps.backends import LocalBackend
from groklm.errors import TokenizerError
from groklm.infer.chat import chat_loop, fit_context
from groklm.tokenizer import Conventions, load_tokenizer

from helpers.models import Rigged
from helpers.runs import ASCII, char_tokenizer, tiny_run


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer(ASCII)


def test_history_and_commands(tokenizer):
    out, err = io.StringIO(), io.StringIO()
    lines = ["hi\n", "\n", "/system Be terse.\n", "again\n", "/reset\n", "x\n", "/nope\n", "/quit\n", "never read\n"]
    history = chat_loop(Rigged(tokenizer), tokenizer, lines, out, err, system="Hello.", temperature=0.0)
    assert out.getvalue() == "7\n7\n7\n"  # one streamed reply per user line, none after /quit
    # /reset kept the system message that /system set; the earlier turns are gone
    assert history == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "x"},
                       {"role": "assistant", "content": "7"}]
    assert "cleared" in err.getvalue() and "unknown command /nope" in err.getvalue()


def test_system_can_be_removed(tokenizer):
    history = chat_loop(Rigged(tokenizer), tokenizer, ["/system\n", "hi\n"], io.StringIO(), io.StringIO(),
                        system="Hello.", temperature=0.0)
    assert [m["role"] for m in history] == ["user", "assistant"]


def test_long_conversations_drop_the_oldest_turns_but_keep_the_system(tokenizer):
    system = {"role": "system", "content": "S"}
    turns = [{"role": r, "content": c * 30} for r, c in [("user", "a"), ("assistant", "b"), ("user", "c")]]
    kept, ids, dropped = fit_context(tokenizer, [system, *turns], budget=90)
    assert kept == [system, turns[2]] and dropped == 2 and len(ids) <= 90
    # the latest message always stays, even if it alone is too long
    kept, _, _ = fit_context(tokenizer, [system, *turns], budget=5)
    assert kept == [system, turns[2]]
    err = io.StringIO()
    model = Rigged(tokenizer)
    model.config.block_size = 64
    chat_loop(model, tokenizer, ["a" * 30 + "\n", "b" * 30 + "\n"], io.StringIO(), err, system="S",
              temperature=0.0, max_new_tokens=4)
    assert "context full: dropped the 2 oldest" in err.getvalue()


def test_chat_command_reads_piped_stdin(tmp_path, monkeypatch, capsys):
    import groklm.cli.main

    run = tiny_run(tmp_path / "run", block_size=128)
    replies = []
    for _ in range(2):
        monkeypatch.setattr("sys.stdin", io.StringIO("hello\nhow are you?\n/quit\n"))
        groklm.cli.main.main(["chat", str(run), "--system", "Be kind.", "--seed", "3", "--max-new-tokens", "6"])
        replies.append(capsys.readouterr().out)
    assert replies[0] == replies[1] and replies[0].count("\n") >= 2  # seeded: the same replies
    with pytest.raises(SystemExit):
        groklm.cli.main.main(["chat", str(run), "--temperature", "-1"])
    assert "temperature" in capsys.readouterr().err


def test_a_run_whose_template_has_no_assistant_role_is_refused_by_chat_serve_and_apps(tmp_path, monkeypatch, capsys):
    import groklm.cli.main

    run = tiny_run(tmp_path / "run", block_size=128)
    tokenizer = load_tokenizer(run / "tokenizer")
    no_assistant = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    tokenizer.with_conventions(Conventions(chat_template=no_assistant)).save(run / "tokenizer")
    for command in (["chat", str(run)], ["serve", str(run), "--port", "0"]):
        monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
        with pytest.raises(SystemExit) as exit_info:
            groklm.cli.main.main(command)
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert "tokenizer/tokenizer.json" in err and "no assistant role" in err and "Traceback" not in err
    with pytest.raises(TokenizerError, match="no assistant role"):
        LocalBackend(run)
