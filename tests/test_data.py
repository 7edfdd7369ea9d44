"""read_rows: formats, error messages naming file/line/field, skip-and-count, real data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from r1lab.data import DataError, load_qa, read_rows

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} is absent")

GOOD = [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": 4, "extra": [1]}]


def write_jsonl(path: Path, lines: list) -> Path:
    with open(path, "wb") as fh:
        for line in lines:
            fh.write(line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode())
    return path


def test_jsonl_roundtrip_and_conversion(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD[0], b"\n", GOOD[1]])  # blank lines are ignored
    rows, skipped = read_rows(str(path), required=("question", "answer"))
    assert skipped == 0
    assert rows == [GOOD[0], {"question": "2+2?", "answer": "4", "extra": [1]}]
    rows, _ = read_rows(str(path), fields={"question": "problem"}, required=("problem",))
    assert rows[0]["problem"] == "1+1?" and "question" not in rows[0]
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_rows(str(bom))[0][0] == GOOD[0]


@pytest.mark.parametrize(
    "bad, message",
    [
        (b'{"question": "x", "answer": \n', r"d\.jsonl:2: malformed JSON"),
        (b'{"question": "caf\xe9", "answer": "1"}\n', r"d\.jsonl:2: not valid UTF-8 \(byte 0xe9"),
        (b"[1, 2]\n", r"d\.jsonl:2: row is not a JSON object \(got list\)"),
        (b'{"question": "x"}\n', r"d\.jsonl:2: missing required field 'answer'"),
        (
            b'{"question": "x", "answer": [1]}\n',
            r"d\.jsonl:2: field 'answer': expected a string or number, got list",
        ),
        (b'{"question": "x", "answer": true}\n', r"field 'answer': expected a string or number, got bool"),
        (b'{"question": "x", "answer": null}\n', r"field 'answer': expected a string or number, got null"),
        (b'{"question": "x", "answer": NaN}\n', r"field 'answer': expected a string or number, got float"),
    ],
)
def test_errors_name_file_line_field(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD[0], bad, GOOD[1]])
    with pytest.raises(DataError, match=message):
        read_rows(str(path), required=("question", "answer"))
    rows, skipped = read_rows(str(path), required=("question", "answer"), skip_bad=True)
    assert (len(rows), skipped) == (2, 1)


def test_renamed_field_error_names_source(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "x"}])
    with pytest.raises(DataError, match=r"missing required field 'answer'"):
        read_rows(str(path), fields={"q": "question"}, required=("question", "answer"))
    path = write_jsonl(tmp_path / "e.jsonl", [{"q": {"a": 1}}])
    with pytest.raises(DataError, match=r"field 'question' \(source field 'q'\)"):
        read_rows(str(path), fields={"q": "question"}, required=("question",))


def test_validate_hook(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    with pytest.raises(DataError, match=r"d\.jsonl:1: too easy"):
        read_rows(str(path), validate=lambda row: "too easy")


def test_json_gz_parquet_and_folder(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(GOOD))
    (tmp_path / "dict.json").write_text(json.dumps({"train": GOOD[:1], "test": GOOD}))
    with gzip.open(tmp_path / "z.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in GOOD))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"question": "a", "answer": "1"}]), tmp_path / "train.parquet")
    assert len(read_rows(str(tmp_path / "list.json"))[0]) == 2
    assert len(read_rows(str(tmp_path / "dict.json"), split="train")[0]) == 1
    assert len(read_rows(str(tmp_path / "z.jsonl.gz"))[0]) == 2
    assert read_rows(str(tmp_path / "train.parquet"))[0] == [{"question": "a", "answer": "1"}]
    assert read_rows(str(tmp_path), split="train")[0] == [{"question": "a", "answer": "1"}]
    (tmp_path / "broken.json").write_text('[{"a": 1},\n {"b": ]')
    with pytest.raises(DataError, match=r"broken\.json:2: malformed JSON"):
        read_rows(str(tmp_path / "broken.json"))
    (tmp_path / "rows.json").write_text('[{"a": 1}, 3]')
    with pytest.raises(DataError, match=r"rows\.json: row 2: row is not a JSON object"):
        read_rows(str(tmp_path / "rows.json"))
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz: cannot read"):
        read_rows(str(tmp_path / "bad.jsonl.gz"))


@pytest.mark.parametrize("source", ["missing.jsonl", "./nope", "/no/such/dir/file.parquet", "data/x.json"])
def test_missing_local_path_is_a_clear_error(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="not found|has no"):
        read_rows(source)


def test_empty_source():
    with pytest.raises(DataError, match="no data source"):
        read_rows("")


def test_load_qa_ids_and_fields(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"problem": "p", "solution": "s \\boxed{1}", "unique_id": "u1"}]
    )
    rows, _ = load_qa(str(path), "test", "problem", "solution", id_prefix="math")
    assert rows == [
        {"id": "u1", "unique_id": "u1", "question": "p", "answer": "s \\boxed{1}", "solution": "s \\boxed{1}"}
    ]
    path = write_jsonl(tmp_path / "e.jsonl", GOOD)
    rows, _ = load_qa(str(path), "test", "question", "answer", limit=1, id_prefix="g")
    assert rows == [{"id": "g-test-0", "question": "1+1?", "answer": "2"}]


@needs_shared
def test_real_data():
    rows, skipped = read_rows(str(SHARED / "gsm8k"), split="test", required=("question", "answer"))
    assert (len(rows), skipped) == (1319, 0)
    rows, skipped = read_rows(str(SHARED / "math500" / "test.jsonl"), required=("problem", "answer"))
    assert (len(rows), skipped) == (500, 0)
    rows, _ = read_rows(str(SHARED / "humaneval" / "HumanEval.jsonl.gz"), required=("task_id", "prompt"))
    assert len(rows) == 164
