"""Per-sample records: what the model was asked, what it answered, and whether that was right.

One JSON object per evaluated item, written as ``samples/<benchmark>.jsonl.gz`` next to the run:
``task``, ``doc_id``, ``prompt`` (the full context; a list of contexts where each choice has its
own, as in XWinograd), ``target``, then either ``output`` (the raw generation) and ``prediction``
(the extracted, normalised answer) and ``gold``, or ``target`` as the gold choice's index with its
``target_text``, ``choices``, ``scores`` (log-likelihood per choice) and ``prediction`` (the index
of the arg-max choice); then ``correct`` (by the benchmark's primary metric) and the item's
``metrics``.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from metalora.files import atomic_path
from metalora.jsonlines import all_objects


def sample_record(
    task: str,
    sample: dict,
    primary_metric: str,
    metrics: Iterable[str],
    explain: Callable[[dict, str], dict] | None,
) -> dict:
    """A JSON-ready record from one lm-eval logged sample."""
    requests = [tuple(_request_args(argument)) for argument in sample["arguments"]]
    record: dict = {"task": task, "doc_id": sample["doc_id"]}
    # generate_until: one request (context, generation settings); a benchmark may mix both kinds.
    if explain is not None and isinstance(requests[0][1], dict):
        output = sample["filtered_resps"][0]
        record |= {"prompt": requests[0][0], "target": sample["target"], "output": output}
        record |= explain(sample["doc"], output)
    else:  # multiple choice: one (context, continuation) request per choice
        contexts = [request[0] for request in requests]
        scores = [float(response[0]) for response in sample["filtered_resps"]]
        choices = [request[1] for request in requests]
        target = sample["target"]
        record |= {
            "prompt": contexts[0] if len(set(contexts)) == 1 else contexts,
            "target": target,  # index of the gold choice
            "target_text": choices[target] if isinstance(target, int) else None,
            "choices": choices,
            "scores": scores,
            "prediction": max(range(len(scores)), key=scores.__getitem__),
        }
    record["correct"] = sample[primary_metric] == 1.0
    record["metrics"] = {metric: float(sample[metric]) for metric in metrics}
    return record


def _request_args(argument: object) -> list:
    # lm-eval logs a request's arguments as a tuple, or as {"arg_0": ..., "arg_1": ...} in some versions.
    if isinstance(argument, dict):
        return [argument[key] for key in sorted(argument)]
    return list(argument)


def write_records(path: Path, records: list[dict]) -> None:
    """Write gzipped JSON lines atomically (``metalora.files.atomic_path``), byte for byte the same
    for the same records: no time and no (temporary, random) file name in the gzip header, so a
    published results folder written again shows no change in git."""
    with atomic_path(path) as temporary, open(temporary, "wb") as raw, gzip.GzipFile(
        filename="", fileobj=raw, mode="wb", mtime=0
    ) as compressed:
        for record in records:
            compressed.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))


def read_records(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    parsed = all_objects(text)
    return parsed if parsed is not None else [json.loads(line) for line in io.StringIO(text)]  # names the bad line
