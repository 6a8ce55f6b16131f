"""The sweep-file YAML loader: bounded, strict about keys, and reading numbers as people write them."""

import time

import pytest

from metalora.errors import MlbenchError
from metalora.yamlfile import MAX_YAML_BYTES, load_yaml_file, parse_yaml

# 600 bytes that expand to 9**7 (about 4.8 million) strings when walked.
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "description: *g\n"
)


def refused(text: str) -> str:
    with pytest.raises(MlbenchError) as caught:
        parse_yaml(text, "s.yaml")
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_alias_bomb_is_refused_before_it_expands():
    assert len(ALIAS_BOMB) < 620
    started = time.process_time()
    message = refused(ALIAS_BOMB)
    assert time.process_time() - started < 1.0  # linear in distinct nodes, never the expansion
    assert message == (
        "s.yaml expands to more than 100,000 values once its aliases (*name) are resolved (line 6); "
        "write the values out instead"
    )


def test_harmless_aliases_and_merge_keys_still_work():
    text = "base: &b {lr: 1.0e-3, rank: 4}\nrun: {<<: *b, rank: 8}\nboth: [*b, *b]\n"
    assert parse_yaml(text, "s.yaml") == {
        "base": {"lr": 0.001, "rank": 4},
        "run": {"lr": 0.001, "rank": 8},
        "both": [{"lr": 0.001, "rank": 4}, {"lr": 0.001, "rank": 4}],
    }


def test_duplicated_key_names_the_key_and_both_lines():
    assert refused("description: x\ngrid:\n  seed: [0]\n  lr: [1]\n  seed: [1]\n") == (
        "s.yaml: key 'seed' is given twice (lines 3 and 5); keep one of them"
    )
    assert refused("{a: 1, a: 2}") == "s.yaml: key 'a' is given twice (line 1); keep one of them"


def test_numbers_in_the_forms_people_write_are_floats():
    data = parse_yaml("lr: [1e-4, 2E-4, 0.0001, 1.5e+3, -3e2, 10, 0x10, '1e-4', 1e5]", "s.yaml")
    assert data == {"lr": [1e-4, 2e-4, 1e-4, 1500.0, -300.0, 10, 16, "1e-4", 1e5]}
    assert [type(v) for v in data["lr"]] == [float, float, float, float, float, int, int, str, float]


def test_self_referencing_alias_and_deep_nesting_are_refused():
    assert refused("a: &a [1, *a]") == "s.yaml: an alias refers to its own anchor (line 1)"
    assert refused("[" * 100 + "]" * 100) == "s.yaml is nested more than 64 levels deep (line 1)"
    block = "".join("  " * i + "a:\n" for i in range(80)) + "  " * 80 + "x\n"
    assert refused(block) == "s.yaml is nested more than 64 levels deep (line 64)"
    # far past Python's recursion limit: still the same line, no RecursionError
    assert refused("[" * 5000 + "]" * 5000) == "s.yaml is nested more than 64 levels deep (line 1)"


def test_file_level_errors_name_the_file(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"description: ok\ngrid: {method: [lora]}\n# caf\xe9\n")
    with pytest.raises(MlbenchError, match=r"^sweep file .*latin.yaml is not UTF-8 text \(line 3\); save it as UTF-8$"):
        load_yaml_file(latin, "sweep file")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_YAML_BYTES + "\n")
    with pytest.raises(MlbenchError, match=r"^sweep file .*big.yaml is 1,048,579 bytes; a sweep file is at most 1,048,576 bytes$"):
        load_yaml_file(big, "sweep file")
    with pytest.raises(MlbenchError, match=r"malformed YAML in .*bad.yaml at line 2: expected ',' or ']', but got ':'"):
        (tmp_path / "bad.yaml").write_text("a: [1, 2\nb: 3\n")
        load_yaml_file(tmp_path / "bad.yaml", "sweep file")
