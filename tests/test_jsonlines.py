"""Training logs and per-sample records read in one parse give what line-by-line reading gives,
and anything that is not one JSON object per line still goes line by line (naming the line)."""

from __future__ import annotations

import gzip
import json

import pytest

from eval_tasks.records import read_records, write_records
from metalora.jsonlines import all_objects
from metalora.runs.store import _training_log

LINES = [{"step": 1, "loss": 2.5}, {"prompt": "caf\u00e9\u2028line", "doc_id": [1, "a"]}, {}]


def test_one_parse_equals_line_by_line():
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in LINES)
    assert all_objects(text) == [json.loads(line) for line in text.split("\n") if line] == LINES
    assert all_objects("") == [] and all_objects("\n") == []
    assert all_objects(text.replace("\n", "\r\n")) == LINES


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}\n\n{"b": 2}\n',  # a blank line
        '{"a": 1}\n{"b": ',  # cut short
        '{"a": 1}, {"b": 2}\n',  # two values on one line
        '{"a": 1}\n[1, 2]\n',  # not an object
        "1, 2\n",
    ],
)
def test_anything_else_goes_line_by_line(text):
    assert all_objects(text) is None


def test_a_training_log_cut_short_keeps_its_steps_and_names_the_line(tmp_path):
    log = tmp_path / "training_log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    problems = []
    assert _training_log(log, problems) == ({"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5})
    assert problems == ["training_log.jsonl line 3 is not JSON"]
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    problems = []
    assert _training_log(log, problems) == ({"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}) and problems == []


def test_records_read_back_and_a_cut_short_file_is_an_error(tmp_path):
    path = tmp_path / "bbh.jsonl.gz"
    write_records(path, LINES)
    assert read_records(path) == LINES
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(LINES[0]) + "\n" + '{"task": "t", "doc')
    with pytest.raises(ValueError, match="Unterminated string"):
        read_records(path)
