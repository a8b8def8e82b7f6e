"""A second model as validator (groklm/apps/judge.py): a rule in words, judged by another
backend; a rejection's reason is re-asked like a schema error, a judge that is down fails the
validation, both models' calls are in the traces, and RAG answers can be checked the same way."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
from pydantic import AfterValidator, BaseModel

from groklm.apps import tracing
from groklm.apps.backends import BackendError
from groklm.apps.judge import JudgeUnavailable, grounded_check, llm_validator
from groklm.apps.rag.grounded import answer
from groklm.apps.rag.index import Index
from groklm.apps.structured import extract

from helpers.backends import Scripted
from helpers.rag import HashEmbedder, doc

pytestmark = pytest.mark.usefixtures("traces")

RUDE = '{"text": "Read the manual, it is not my job."}'
POLITE = '{"text": "Happy to help: the reset button is under the lid."}'


def verdict(ok: bool, reason: str) -> str:
    return json.dumps({"ok": ok, "reason": reason})


def reply_model(judge):
    class Reply(BaseModel):
        text: Annotated[str, AfterValidator(llm_validator(judge, "is polite to the customer"))]

    return Reply


def test_a_rejected_field_is_re_asked_with_the_judges_reason(traces):
    writer = Scripted([RUDE, POLITE], model="writer")
    judge = Scripted([verdict(False, "it tells the customer to read the manual"), verdict(True, "courteous")], model="judge")
    with tracing.span("support reply") as root:
        result = extract(writer, reply_model(judge), "The customer asks where the reset button is.")
    assert result.value.text.startswith("Happy to help")
    assert [a.error is None for a in result.attempts] == [False, True]
    reask = writer.sent[1]["messages"][-1]["content"]
    assert "is polite to the customer" in reask and "it tells the customer to read the manual" in reask
    judged = judge.sent[0]["messages"][-1]["content"]  # the judge saw the rule and the writer's text, as data
    assert "Rule: is polite to the customer" in judged and "<text>\nRead the manual, it is not my job.\n</text>" in judged
    chats = [s for s in traces.trace(root.trace_id) if s.name.startswith("chat ")]
    assert sorted(s.name for s in chats) == ["chat judge", "chat judge", "chat writer", "chat writer"]
    assert all(s.attributes["gen_ai.usage.input_tokens"] == 10 for s in chats)  # both models' usage is recorded


def test_the_whole_output_can_be_judged():
    class Person(BaseModel):
        name: str
        city: str

    judge = Scripted([verdict(True, "a real city")])
    checked = Annotated[Person, AfterValidator(llm_validator(judge, "names a city that exists"))]
    result = extract(Scripted(['{"name": "Ann", "city": "Lyon"}']), checked, "Ann lives in Lyon.")
    assert result.value == Person(name="Ann", city="Lyon")
    assert '{"name": "Ann", "city": "Lyon"}' in judge.sent[0]["messages"][-1]["content"]


@pytest.mark.parametrize("judge_replies", [
    [BackendError("connection refused")],  # the judge is down
    ["I think it is fine.", "Looks good to me!"],  # no verdict it can give, even when re-asked
])
def test_a_judge_that_cannot_judge_fails_the_validation(judge_replies):
    writer = Scripted([POLITE, POLITE])
    with pytest.raises(JudgeUnavailable, match="could not check the rule 'is polite to the customer'"):
        extract(writer, reply_model(Scripted(judge_replies)), "Where is the reset button?")
    assert len(writer.sent) == 1  # never passed, and never blamed on the writer


@pytest.fixture
def index(tmp_path):
    idx = Index.create(tmp_path / "idx", HashEmbedder(), max_tokens=40, overlap=5)
    idx.upsert([doc("/d/manual.pdf", "Error E42 means the fuel filter is clogged.", format="pdf", page=4)])
    return idx


def test_a_grounded_answer_that_states_more_than_the_passages_is_asked_again(index):
    writer = Scripted(["E42 means the fuel filter is clogged; replace it every 500 km [1].",
                       "E42 means the fuel filter is clogged [1]."])
    judge = Scripted([verdict(False, "the passages say nothing about 500 km"), verdict(True, "supported by [1]")])
    result = answer("What does error E42 mean?", index, writer, min_similarity=0.0, check=grounded_check(judge))
    assert result.text == "E42 means the fuel filter is clogged [1]." and result.verdict.ok
    assert [s.number for s in result.cited] == [1]
    assert "500 km" in writer.sent[1]["messages"][-1]["content"]
    assert "Error E42 means the fuel filter is clogged." in judge.sent[0]["messages"][-1]["content"]
    assert result.to_dict()["check"] == {"ok": True, "reason": "supported by [1]"}


def test_the_check_gives_up_after_recheck_and_says_so(index):
    writer = Scripted(["It is the oil pump [1].", "It is the oil pump, surely [1]."])
    judge = Scripted([verdict(False, "the passage names the fuel filter"), verdict(False, "still the oil pump")])
    result = answer("What does error E42 mean?", index, writer, min_similarity=0.0, check=grounded_check(judge), recheck=1)
    assert not result.verdict.ok and result.verdict.reason == "still the oil pump"
    assert len(writer.sent) == 2 and result.to_dict()["check"]["ok"] is False
