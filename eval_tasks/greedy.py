"""Greedy decoding of many prompts with a key/value cache, a batch kept full as rows finish.

A row is done at an EOS token, after ``max_new`` tokens, or as soon as one of the stop strings
appears in the decoded last ``len(stop tokens) + 2`` generated tokens (lm-eval's own check, never
reaching into the prompt). With a stop's ``Triggers`` (``eval_tasks/stops.py``) the window is
decoded only while it holds a token that can carry the stop's last character: the same answer
without a decode per row and step. Done rows leave the batch once they are a quarter of it (each removal
copies the cache), and waiting prompts take their places: with a static batch every batch runs as
long as its longest answer, so a few answers that run to the cap would keep a whole batch busy.

Two row budgets: at most ``rows`` prompts are prefilled in one forward (the evaluation batch size,
which bounds the activations of a long prompt), and at most ``decode_rows`` rows decode together
(default: ``rows``). On a GPU a decoding step of a small model costs the same host time whatever
its rows (``bench/eval_profile.py``: SmolLM2-135M's step is Python-bound), so more rows per step
means proportionally fewer steps. What bounds it is the key/value cache's memory: beyond ``rows``
rows, prompts join only while the cache the rows will need by their last token stays within
``cache_bytes`` (``DECODE_CACHE_BYTES``), so long prompts decode fewer rows at a time.

``static=True`` keeps HFLM's own batches instead: prompts in the same order and chunks of ``rows``,
each chunk prefilled at once and decoded exactly as long as HF ``generate`` under lm-eval decodes
it (or less, where every row's text is already final and HF's further forwards would change no
text: ``Stopping.final``), each row fed what that feeds it (its greedy tokens, padding after an EOS), a chunk without
padding masked or not as the installed transformers' ``generate`` does. lm-eval hands ``generate``
one stop criterion per stop string, each done only once every row of the chunk has met that same
string, so a chunk ends at the cap, when every row has had an EOS, or when one stop string has been
seen in every row; and each row's output is every token of its chunk, because HFLM decodes them all
(special tokens dropped) before cutting at the stop strings: a row whose stop string is a special
token that is not the model's EOS (as lm-eval's added EOS text can be) keeps the text it generated
after it. Every forward then has the very shapes of HFLM's, so in bfloat16, where a different batch
or padding width changes rounding and so can flip a near-tie of the argmax, it reproduces HFLM's
generations; it gives up the refilling, not the cheaper loop. With ``step_graphs`` (CUDA) a chunk's
decoding steps run on fixed key/value buffers, one CUDA graph replayed per step
(``eval_tasks/step_graphs.py``): HF's step's kernels, attention over masked extra columns that add nothing.

Layout: all rows share one cache whose columns are aligned on the right (the newest token of every
row is in the last column); a row's own tokens are preceded by masked padding. New rows are
prefilled on their own (left-padded) and joined to the batch by padding whichever cache is shorter
on the left. Positions are kept per row, so padding never shifts a row's positions: each row sees
exactly its own prompt and its own tokens, as when HF ``generate`` runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eval_tasks.step_graphs import GraphUnavailable, StepGraphs
from eval_tasks.stops import Triggers

# The key/value cache that rows decoding together may need by their last token, beyond the first
# ``rows`` (which the batch size admits anyway): long prompts then decode fewer rows at a time, so
# that several workers sharing one GPU stay within its memory. A step's concatenation briefly holds
# a second copy.
DECODE_CACHE_BYTES = 4 * 2**30


def decoding_rows(rows: int, decode_rows: int | None) -> int:
    """Rows decoding together: ``decode_rows`` (None: ``rows``), never fewer than the ``rows``
    prefilled at once."""
    return rows if decode_rows is None else max(decode_rows, rows)


Forward = Callable[
    ..., object
]  # (input_ids, attention_mask=, position_ids=, past_key_values=, ...) -> output


@dataclass(frozen=True)
class Stopping:
    eos: frozenset[int]
    stops: tuple[tuple[str, int], ...]  # (stop string, tokens to look back)
    max_new: int
    triggers: tuple[Triggers | None, ...] = ()  # per stop (None or none given: decode every step)
    # Static batches: whether a row's text, as HFLM will cut it, can no longer change whatever it is
    # fed next, given its tokens and whether it has had an EOS (None: never known). A chunk all of
    # whose rows' texts are final ends there, though HF generate would decode on: those forwards
    # change no text.
    final: Callable[[list[int], bool], bool] | None = None

    def trigger(self, index: int) -> Triggers | None:
        return self.triggers[index] if self.triggers else None


@dataclass
class _Batch:
    cache: object  # transformers DynamicCache, rows x columns
    mask: torch.Tensor  # [rows, columns], 1 for a row's real tokens
    positions: torch.Tensor  # [rows] position of each row's next token
    logits: torch.Tensor  # [rows, vocab] scores of each row's next token
    prompts: list[int]  # prompt index of each row
    done: list[bool]
    unmasked: bool = False  # no padding anywhere and the mask dropped: the model gets none (as HF generate may)


class GreedyDecoder:
    """``run(prompts)`` -> generated token ids per prompt: at most ``rows`` prompts prefilled at a
    time, at most ``decode_rows`` rows decoding together (module docstring)."""

    def __init__(self, forward: Forward, tokenizer, pad_id: int, rows: int, device, *, static: bool = False,
                 decode_rows: int | None = None, cache_bytes: float = DECODE_CACHE_BYTES,
                 drop_full_mask: bool = True, step_graphs: StepGraphs | None = None) -> None:
        self.forward, self.tokenizer, self.pad_id, self.rows, self.device = (
            forward,
            tokenizer,
            pad_id,
            rows,
            device,
        )
        self.static = static
        # Static batches keep HFLM's shapes, so they decode exactly the rows they prefilled.
        self.decode_rows = rows if static else decoding_rows(rows, decode_rows)
        self.cache_bytes = cache_bytes
        # Static batches: whether a chunk without padding runs with no mask at all. HF generate drops
        # an all-ones mask in some transformers versions and passes it in others (which changes the
        # attention kernel, and so bfloat16 rounding); the caller says what the installed one does.
        self.drop_full_mask = drop_full_mask
        self._cache_token_bytes: float | None = None
        # Static batches: decoding steps on fixed buffers, replayed as CUDA graphs (eval_tasks/step_graphs.py).
        self.step_graphs = step_graphs

    def run(self, prompts: Sequence[Sequence[int]], stopping: Stopping) -> list[list[int]]:
        if self.static:
            return self._run_static(prompts, stopping)
        outputs: list[list[int]] = [[] for _ in prompts]
        marks = _marks(prompts, stopping)
        waiting = 0  # prompts[waiting:] have not started; callers pass them longest first
        batch: _Batch | None = None
        while batch is not None or waiting < len(prompts):
            live = 0 if batch is None else len(batch.prompts)
            if waiting < len(prompts) and 4 * live <= 3 * self.decode_rows:
                batch, waiting = self._fill(batch, prompts, waiting, stopping.max_new)
            chosen = self._choose(batch, outputs, stopping, marks)
            if 4 * sum(batch.done) >= len(batch.prompts):
                keep = [slot for slot, done in enumerate(batch.done) if not done]
                if not keep:
                    batch = None
                    continue
                index = torch.tensor(keep, dtype=torch.long, device=self.device)
                batch, chosen = self._keep(batch, index), chosen[index]
            batch = self._step(batch, chosen)
        return outputs

    def _run_static(self, prompts: Sequence[Sequence[int]], stopping: Stopping) -> list[list[int]]:
        outputs: list[list[int]] = [[] for _ in prompts]
        marks = _marks(prompts, stopping)
        eos = torch.tensor(sorted(stopping.eos), dtype=torch.long, device=self.device)
        for start in range(0, len(prompts), self.rows):
            batch = self._prefill(prompts, range(start, min(start + self.rows, len(prompts))),
                                  drop_full_mask=self.drop_full_mask)
            rows = batch.prompts
            # What HF generate feeds each row: its greedy token, EOS included, then padding after an EOS.
            after_eos = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
            # lm-eval's criterion of each stop string: which rows have met it (for good), whole batch at once.
            seen = [[False] * len(rows) for _ in stopping.stops]
            final = [False] * len(rows)  # Stopping.final, asked once a row has had an EOS or met a stop
            graph_step = self._graph_step(batch, stopping.max_new - 1)
            while True:
                fed = batch.logits.argmax(dim=-1).masked_fill(after_eos, self.pad_id)
                after_eos |= torch.isin(fed, eos)
                ended = after_eos.tolist()
                for slot, token in enumerate(fed.tolist()):
                    tokens = outputs[rows[slot]]
                    tokens.append(token)
                    for index, met in enumerate(seen):
                        if not met[slot]:
                            met[slot] = self._stop_seen(tokens, token, stopping, marks[rows[slot]], index)
                    if stopping.final is not None and not final[slot] and (
                            ended[slot] or any(met[slot] for met in seen)):  # fmt: skip
                        final[slot] = stopping.final(tokens, ended[slot])
                if (len(outputs[rows[0]]) >= stopping.max_new or all(ended)
                        or any(all(met) for met in seen) or all(final)):  # fmt: skip
                    break
                if graph_step is not None:
                    try:
                        batch.logits = graph_step(fed)
                        continue
                    except GraphUnavailable:  # on its first step, before the chunk's own cache moved on
                        graph_step = None
                batch = self._step(batch, fed)
        return outputs

    def _graph_step(self, batch: _Batch, steps: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The chunk's decoding step on fixed buffers (``step_graphs``), or None: graphs off or
        unusable, or a chunk without padding, to which HF may pass no mask (so another attention
        kernel than the one whose masked columns are exact)."""
        graphs = self.step_graphs
        if graphs is None or not graphs.usable or steps < 1 or batch.unmasked or bool(batch.mask.all()):
            return None
        return graphs.start(_layers(batch.cache), batch.mask, batch.positions, steps)

    def _choose(
        self, batch: _Batch, outputs: list[list[int]], stopping: Stopping, marks: list[list[int]]
    ) -> torch.Tensor:
        """The greedy token of every row; appended to the outputs of rows still generating, which
        are marked done when it ends them."""
        chosen = batch.logits.argmax(dim=-1)
        for slot, token in enumerate(chosen.tolist()):
            if not batch.done[slot]:
                prompt = batch.prompts[slot]
                tokens = outputs[prompt]
                tokens.append(token)
                batch.done[slot] = self._finished(tokens, token, stopping, marks[prompt])
        return chosen

    def _finished(self, tokens: list[int], token: int, stopping: Stopping, marks: list[int]) -> bool:
        """lm-eval's rule for one row: EOS, the cap, or a stop string in the decoded last ``lookback`` tokens."""
        if token in stopping.eos or len(tokens) >= stopping.max_new:
            return True
        return any(self._stop_seen(tokens, token, stopping, marks, index) for index in range(len(stopping.stops)))

    def _stop_seen(self, tokens: list[int], token: int, stopping: Stopping, marks: list[int], index: int) -> bool:
        """Whether stop ``index`` is in the decoded last ``lookback`` tokens, ``token`` the newest.
        ``marks[index]``: the length of ``tokens`` when it last ended in a trigger of that stop; a
        window without a trigger cannot hold the stop string, so it is not decoded."""
        stop, lookback = stopping.stops[index]
        triggers = stopping.trigger(index)
        end = len(tokens)
        if triggers is None or token in triggers:
            marks[index] = end
        return end - marks[index] < lookback and stop in self.tokenizer.decode(tokens[-lookback:])

    def _prefill(self, prompts: Sequence[Sequence[int]], indices: range, drop_full_mask: bool = False) -> _Batch:
        from transformers import DynamicCache

        width = max(len(prompts[i]) for i in indices)
        ids = torch.full((len(indices), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, index in enumerate(indices):  # left padding, as HF generation does
            tokens = prompts[index]
            ids[row, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
            mask[row, width - len(tokens) :] = 1
        # HF generate's position ids (padding at 0, masked anyway; each row's tokens from 0).
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        unmasked = drop_full_mask and bool(mask.all())
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        cache = DynamicCache()
        logits = self.forward(
            ids, attention_mask=None if unmasked else mask, position_ids=positions, past_key_values=cache,
            logits_to_keep=1,
        ).logits[:, -1]
        return _Batch(cache, mask, positions[:, -1] + 1, logits, list(indices), [False] * len(indices), unmasked)

    def _fill(self, batch: _Batch | None, prompts: Sequence[Sequence[int]], waiting: int,
              max_new: int) -> tuple[_Batch, int]:
        """``batch`` joined by waiting prompts, prefilled ``rows`` at a time, while there are fewer
        than ``decode_rows`` rows and (beyond the first ``rows``, which the batch size admits anyway)
        the cache they will need by their last token stays within ``cache_bytes``."""
        parts = [] if batch is None else [batch]
        live = 0 if batch is None else len(batch.prompts)
        width = 0 if batch is None else batch.mask.shape[1]
        while waiting < len(prompts) and live < self.decode_rows:
            count = min(self.rows, len(prompts) - waiting, self.decode_rows - live)
            if live >= self.rows:
                columns = max(width, *(len(prompts[i]) for i in range(waiting, waiting + count))) + max_new
                count = min(count, int(self.cache_bytes // (columns * self._token_bytes(parts))) - live)
                if count <= 0:
                    break
            part = self._prefill(prompts, range(waiting, waiting + count))
            parts.append(part)
            live, waiting, width = live + count, waiting + count, max(width, part.mask.shape[1])
        return self._join(parts), waiting

    def _token_bytes(self, parts: list[_Batch]) -> float:
        """Bytes of key/value cache per row and column (all layers), read off a cache once."""
        if self._cache_token_bytes is None:
            part = parts[0]
            total = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in _layers(part.cache))
            self._cache_token_bytes = total / (len(part.prompts) * part.mask.shape[1])
        return self._cache_token_bytes

    def _join(self, parts: list[_Batch]) -> _Batch:
        """One batch of the rows of ``parts``, in order: one copy of every cache, each left-padded
        to the widest."""
        if len(parts) == 1:
            return parts[0]
        width = max(part.mask.shape[1] for part in parts)

        def left_pad(tensor: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - tensor.shape[dim]
            if missing == 0:
                return tensor
            padding = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
            return F.pad(tensor, padding)

        layers = [
            (torch.cat([left_pad(k, 2) for k, _ in per_part]), torch.cat([left_pad(v, 2) for _, v in per_part]))
            for per_part in zip(*(_layers(part.cache) for part in parts), strict=True)
        ]
        return _Batch(
            _cache_from(layers),
            torch.cat([left_pad(part.mask, 1) for part in parts]),
            torch.cat([part.positions for part in parts]),
            torch.cat([part.logits for part in parts]),
            [prompt for part in parts for prompt in part.prompts],
            [done for part in parts for done in part.done],
        )

    def _keep(self, batch: _Batch, index: torch.Tensor) -> _Batch:
        """The rows at ``index``; columns that are padding for all of them are dropped too."""
        mask = batch.mask[index]
        first = int(mask.any(dim=0).long().argmax())
        layers = [(k[index, :, first:], v[index, :, first:]) for k, v in _layers(batch.cache)]
        rows = index.tolist()
        return _Batch(
            _cache_from(layers),
            mask[:, first:],
            batch.positions[index],
            batch.logits[index],
            [batch.prompts[row] for row in rows],
            [False] * len(rows),
        )

    def _step(self, batch: _Batch, chosen: torch.Tensor) -> _Batch:
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.prompts), 1))], dim=1)
        batch.logits = self.forward(
            chosen[:, None],
            attention_mask=None if batch.unmasked else batch.mask,
            position_ids=batch.positions[:, None],
            past_key_values=batch.cache,
        ).logits[:, -1]
        batch.positions = batch.positions + 1
        return batch


def _marks(prompts: Sequence[Sequence[int]], stopping: Stopping) -> list[list[int]]:
    # Far enough back that no window reaches it: no trigger seen yet.
    return [[-stopping.max_new - lookback for _, lookback in stopping.stops] for _ in prompts]


def _layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers ``DynamicCache`` (its layout since 4.56)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_from(layers: list[tuple[torch.Tensor, torch.Tensor]]):
    from transformers import DynamicCache

    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache
