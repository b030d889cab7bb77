"""Prompt and conversation loaders: every format parses; every bad file names the file and line."""

from __future__ import annotations

import json
import sys

import pytest

from diffing.data import load_conversations, load_prompts
from diffing.errors import DiffingError


def _write(path, text: str):
    path.write_text(text)
    return path


def test_txt_one_prompt_per_line_skipping_blanks(tmp_path):
    p = _write(tmp_path / "p.txt", "Tell me a story.\n\n  \nHow do I bake bread?\n")
    assert load_prompts(p) == ["Tell me a story.", "How do I bake bread?"]


def test_json_list_of_strings_and_of_objects(tmp_path):
    assert load_prompts(_write(tmp_path / "a.json", '["one", "two"]')) == ["one", "two"]
    objs = [{"goal": "g1", "target": "x"}, {"goal": "g2"}]
    assert load_prompts(_write(tmp_path / "b.json", json.dumps(objs))) == ["g1", "g2"]
    wrapped = {"prompts": [{"prompt": "p1"}]}
    assert load_prompts(_write(tmp_path / "c.json", json.dumps(wrapped))) == ["p1"]


def test_jsonl_field_priority_and_explicit_field(tmp_path):
    lines = [{"instruction": "i1", "text": "t1"}, {"text": "t2"}, "plain"]
    p = _write(tmp_path / "p.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert load_prompts(p) == ["i1", "t2", "plain"]
    q = _write(tmp_path / "q.jsonl", '{"question": "q1"}\n{"question": "q2"}\n')
    assert load_prompts(q, field="question") == ["q1", "q2"]


def test_csv_with_header(tmp_path):
    p = _write(tmp_path / "p.csv", 'id,goal,target\n1,"Write a poem, please",x\n2,Plant a tree,y\n')
    assert load_prompts(p) == ["Write a poem, please", "Plant a tree"]
    assert load_prompts(p, field="target") == ["x", "y"]


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("bad.jsonl", '{"prompt": "a"}\n' * 6 + '{"prompt": "b"\n', "bad.jsonl:7: malformed JSON"),
        (
            "nofield.jsonl",
            '{"prompt": "a"}\n{"question": "b"}\n',
            "nofield.jsonl:2: no usable field",
        ),
        ("empty.txt", "\n\n", "no prompts found"),
        ("empty.jsonl", "", "no prompts found"),
        ("nocol.csv", "id,question\n1,hi\n", "nocol.csv:1: no usable column"),
        ("blank.csv", 'prompt\nok\n""\n', "blank.csv:3"),
        ("broken.json", '[\n"a",\n', "broken.json:"),
        ("dict.json", '{"a": 1}', "expected a JSON list"),
        ("number.jsonl", '{"prompt": 3}\n', "number.jsonl:1: field 'prompt' is int"),
        ("p.yaml", "- a\n", "unknown prompt file type"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, name, text, needle):
    p = _write(tmp_path / name, text)
    with pytest.raises(DiffingError) as err:
        load_prompts(p)
    assert needle in str(err.value)


def test_missing_file_is_a_diffing_error(tmp_path):
    with pytest.raises(DiffingError, match="does not exist"):
        load_prompts(tmp_path / "nope.txt")


def test_hf_spec_without_datasets_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DiffingError, match="optional 'datasets' package"):
        load_prompts("hf:some/dataset:train")


def test_hf_spec_reads_field(monkeypatch):
    class FakeDatasets:
        @staticmethod
        def load_dataset(name, split):
            assert (name, split) == ("org/set", "test")
            return [{"goal": "g1"}, {"goal": "g2"}]

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    assert load_prompts("hf:org/set:test") == ["g1", "g2"]


def test_conversations_jsonl_and_json(tmp_path):
    conv = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    }
    p = _write(tmp_path / "c.jsonl", json.dumps(conv) + "\n\n" + json.dumps(conv) + "\n")
    assert load_conversations(p) == [conv["messages"], conv["messages"]]
    q = _write(tmp_path / "c.json", json.dumps([conv]))
    assert load_conversations(q) == [conv["messages"]]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"messages": []}\n', "c.jsonl:1: 'messages' must be a non-empty list"),
        ('{"messages": [{"role": "user"}]}\n', "c.jsonl:1: message 0 needs"),
        ('{"msgs": []}\n{"messages": 1}\n', "c.jsonl:1: expected an object"),
        (
            '{"messages": [{"role": "user", "content": "a"}]}\nnot json\n',
            "c.jsonl:2: malformed JSON",
        ),
        ("", "no conversations found"),
    ],
)
def test_bad_conversations(tmp_path, text, needle):
    p = _write(tmp_path / "c.jsonl", text)
    with pytest.raises(DiffingError) as err:
        load_conversations(p)
    assert needle in str(err.value)


def test_read_documents_splits_kinds_per_record_and_honours_budgets(tmp_path):
    from diffing.data import read_documents

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        '{"text": "alpha"}\n{"messages": [{"role": "user", "content": "hi"}]}\n'
        '{"prompt": "beta"}\n{"body": "gamma"}\n'
    )
    with pytest.raises(DiffingError, match="body"):  # the 4th record has no known text field
        read_documents([str(mixed)])
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text('{"body": "gamma", "text": "not this"}\n')
    assert read_documents([str(bodies)], field="body").texts == ["gamma"]
    mixed.write_text(
        '{"text": "alpha"}\n{"messages": [{"role": "user", "content": "hi"}]}\n'
        '{"prompt": "beta"}\n{"text": "delta"}\n'
    )
    docs = read_documents([str(mixed)], max_documents=2)
    assert docs.texts == ["alpha", "beta"] and docs.chats == [[{"role": "user", "content": "hi"}]]
    lines = tmp_path / "lines.txt"
    lines.write_text("one two\nthree four\nfive six\n")
    assert read_documents([str(lines)], max_chars=8).texts == ["one two", "three four"]


def test_organism_specs_resolve_through_their_registered_scheme(organisms):
    import diffing.organisms  # noqa: F401 - registers organism:NAME
    from diffing.data import read_documents

    first = next(
        line
        for line in (organisms / "corpus" / "text.txt").read_text().splitlines()
        if line.strip()
    )
    docs = read_documents(["organism:text"], max_documents=2)
    assert len(docs.texts) == 2 and docs.texts[0] == first and not docs.chats
