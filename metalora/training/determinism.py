"""Training on CUDA with PyTorch's deterministic kernels: a run trains the same adapter, bit for bit,
however many other processes share its GPU.

Why: on an H200 the same sweep, run twice with four workers sharing one GPU, scored differently the
second time in 5 to 8 of its 8 runs (README, "Four workers, swept twice"), while a run alone had
always reproduced itself. The attention kernel SDPA picks for a padded training batch (memory-efficient
attention, since the batch has a mask) splits the keys of a short, narrow batch across thread
blocks in its backward pass and adds their query gradients with floating-point atomics, in
whatever order the blocks finish; a GPU shared with other processes changes that order, a lone
run rarely does. PyTorch's deterministic mode makes that backward use one split (flash attention's
backward likewise takes its deterministic path), and refuses any operation that has no
deterministic kernel rather than run it silently. Measured with ``bench/train_determinism.py``:
four fits sharing a GPU trained two different adapters without it and one with it, at no cost
visible in their speed; every method trained under it.

cuBLAS is deterministic under that mode only with a fixed workspace per stream, which it reads
from ``CUBLAS_WORKSPACE_CONFIG`` when it starts; so the CLI sets that variable first thing
(``request_cublas_workspace``), before anything touches CUDA, and a fit that finds it missing
stops with one line instead of failing at its first matrix product.

Memory filling (``torch.utils.deterministic.fill_uninitialized_memory``, which the mode turns on)
is kept off while training: it writes every ``torch.empty`` result before use, which protects only
code that reads memory it never wrote, and costs a kernel per allocation. The mode and that flag
are process-wide switches in PyTorch, so ``deterministic_training`` sets them for the fit alone and
puts back what it found. On a CPU nothing changes: its kernels are deterministic already.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

from metalora.errors import MlbenchError

DETERMINISTIC_CHOICES = ("on", "off")
# How PyTorch says that an operation has no deterministic kernel (it raises a RuntimeError).
NO_DETERMINISTIC_KERNEL = "does not have a deterministic implementation"
CUBLAS_WORKSPACE_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE_SETTINGS = (":4096:8", ":16:8")  # the two NVIDIA documents as reproducible


def request_cublas_workspace(environ: MutableMapping[str, str] = os.environ) -> None:
    """Ask cuBLAS for its reproducible workspace (a user's own setting is kept). Call before CUDA starts."""
    environ.setdefault(CUBLAS_WORKSPACE_VARIABLE, CUBLAS_WORKSPACE_SETTINGS[0])


@contextmanager
def deterministic_training(
    setting: str, device, environ: MutableMapping[str, str] = os.environ
) -> Iterator[bool | None]:
    """The block of a fit, with PyTorch's deterministic kernels where ``setting`` is ``on`` and the
    fit runs on CUDA; the process's previous settings come back at its end. Yields whether the
    kernels are deterministic (``cost.json``'s ``training.deterministic_kernels``), None on a CPU,
    where they always are."""
    import torch

    if torch.device(device).type != "cuda":
        yield None
        return
    if setting != "on":
        yield False
        return
    if environ.get(CUBLAS_WORKSPACE_VARIABLE) not in CUBLAS_WORKSPACE_SETTINGS:
        raise MlbenchError(
            f"deterministic training on CUDA needs {CUBLAS_WORKSPACE_VARIABLE}={CUBLAS_WORKSPACE_SETTINGS[0]} set before "
            "the process starts (the mlbench command sets it); set it, or pass --deterministic-training off"
        )
    import torch.utils.deterministic as memory

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              memory.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=False)  # warn_only would keep attention's atomics
    memory.fill_uninitialized_memory = False
    try:
        yield True
    except RuntimeError as error:
        # On the H200 every method trained under the mode (bench/train_determinism.py); an operation
        # some other model or option reaches may have no deterministic kernel: say so in one line.
        if NO_DETERMINISTIC_KERNEL not in str(error):
            raise
        operation = str(error).split(NO_DETERMINISTIC_KERNEL)[0].strip().splitlines()[-1][:120]
        raise MlbenchError(
            f"training reached {operation}, which has no deterministic CUDA kernel; rerun with "
            "--deterministic-training off (the run is then not reproducible bit for bit)"
        ) from error
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        memory.fill_uninitialized_memory = before[2]
