"""A faster lm-eval model for an in-memory causal LM: the same requests, the same answers as HFLM.

``FastLM`` subclasses lm-eval's ``HFLM`` so that everything that decides *what* is scored stays
lm-eval's own: tokenization (``tok_encode``, the trailing-space move of ``_encode_pair``, the empty-
context prefix token), left truncation to ``max_length``, stop sequences, EOS handling and the
post-processing of generations. Only *how* the model is run changes:

- Tokenization (``loglikelihood``, ``_encode_pair``). lm-eval tokenizes ``context + option`` and
  ``context`` for every option, so a multiple-choice item tokenizes its long context once more per
  option; on a GPU that, not the model, was most of MMLU's time. Here every distinct string is
  tokenized once, in batches, into a memo; and for byte-level BPE tokenizers whose tokens never
  span a line start (GPT-2's, Qwen2's and Llama 3's pre-tokenizers) an option's tokens come from
  the context's last line plus the option alone (``eval_tasks/pair_split.py``: the same tokens,
  checked for every context), so the context is tokenized once per item.
- Log-likelihood (``_loglikelihood_tokens``). HFLM runs every (context, continuation) pair as one
  full sequence and takes a log-softmax over the whole vocabulary at every position of the padded
  batch (151k entries per position for Qwen), then picks each request apart with several small
  device operations and host transfers. Here each request is split into a *prefix* (the input up
  to the token before the continuation) and a *query* (that token plus the continuation minus its
  last token, whose logits score the continuation). A prefix followed by one distinct query (MMLU's
  one-token options " A".." D" share one; XWinograd has a prefix per option) runs as one
  left-padded sequence with logits kept only for the query positions (``logits_to_keep``). A
  prefix followed by several queries (the options of a BBH item) runs once, without logits, and its
  key/value cache is shared by all its queries, which then run in their own batch. The log-softmax
  (float32) is taken only at the scored positions; results come back with one host transfer per
  batch. Batches hold at most ``batch_size`` rows, sorted by length.
- Greedy generation (``generate_until``). Requests sorted by length, a plain greedy loop over a
  key/value cache (``eval_tasks/greedy.py``): each row stops at EOS, at ``max_gen_toks`` or as soon
  as one of its stop sequences appears (checked like lm-eval: on the decoded last tokens of the
  generation; decoded only while those hold a token that can end the stop string,
  ``eval_tasks/stops.py``); finished rows leave the batch and waiting prompts take their places, up to
  ``decode_rows`` rows decoding together (prefilled ``batch_size`` at a time). HFLM instead
  runs static batches until its stopping criteria end them. The text is then decoded and cut as
  HFLM does, but from the row's tokens up to its stop: where a stop string is a special token
  that is not the model's EOS, HFLM's text goes on with whatever its batch generated after it.
  Anything but plain greedy decoding (sampling, or a model generation config with repetition
  penalties, its own max_new_tokens and the like: ``_PLAIN_GREEDY``) is handed to HFLM unchanged.

``stock_shapes=True`` (what a run uses unless ``--eval-shapes fast``) gives every forward HFLM's
shapes instead, keeping the rest (tokenization memo, cached tasks, batched scoring with one host
transfer per batch, the cheaper decoding loop). Log-likelihood: HFLM's batches (its grouping and
order), each input right-padded with zeros and run without a mask through HFLM's ``_model_call``;
the log-softmax in HFLM's dtype at the scored positions only (row-wise, so the same values), the
sums as HFLM's ``torch.sum``. Generation: HFLM's static batches (same order, same chunks, each
decoded exactly as long as HF ``generate`` under lm-eval decodes it, each row fed what that feeds
it, and each row's text decoded from all its chunk's tokens, as HFLM's is: ``eval_tasks/greedy.py``;
with ``cuda_graphs`` on CUDA its decoding steps are replayed as CUDA graphs, ``eval_tasks/step_graphs.py``).
Tests hold the forwards equal call by call and the answers equal bit for bit, in float32 and
bfloat16, on a CPU. With ``scored_logits`` as well
(``--eval-shapes stock-scored``), the model's output layer runs only at the positions a
log-likelihood batch scores (one list of positions for all its rows, transformers'
``logits_to_keep``), so a batch never holds every position's full-vocabulary logits; everything
below the output layer gets HFLM's input unchanged, and only the output layer's product has fewer
rows (answers equal on a CPU in tests, and on an H200 where measured: README).

Numerics without stock shapes: the sums are the same log-probabilities computed with different
batch shapes (and a cached prefix), so they agree with HFLM's to float rounding (tests: 1e-4 in
float32 on a tiny model). In bfloat16 that rounding is coarse: on an H200 HFLM's own answers do
not change with its batch size, while these differ (``bench/eval_speed.py``: SmolLM2 BBH-MC
predictions 85.5% equal); greedy generations from a refilled batch differ at near-ties too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

from eval_tasks.greedy import GreedyDecoder, Stopping
from eval_tasks.pair_split import continuation_tokens, splits_at_lines, tail_start
from eval_tasks.step_graphs import StepGraphs
from eval_tasks.stops import Triggers, stop_triggers, token_texts

# Generation-config fields that change greedy decoding away from a plain argmax; with any of them
# set to something other than these values the stock HFLM path runs instead.
_PLAIN_GREEDY = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "num_beams": (None, 1),
    "sequence_bias": (None,),
    "logits_processor": (None,),
    "exponential_decay_length_penalty": (None,),
    "guidance_scale": (None, 1.0),
    "penalty_alpha": (None,),
    "dola_layers": (None,),
    # Not the argmax but the length or the forwards: a config's max_new_tokens overrides lm-eval's
    # max_length in HF generate; stop strings, a time limit, another cache or prompt lookup change
    # where a row stops or what each forward computes.
    "max_new_tokens": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
    "cache_implementation": (None,),
    "prompt_lookup_num_tokens": (None,),
}
Request = tuple[tuple[str, str], list[int], list[int]]


@dataclass
class _Prefix:
    tokens: tuple[int, ...]
    queries: dict[tuple[int, ...], int] = field(default_factory=dict)  # query tokens -> query id


class FastLM(HFLM):
    """lm-eval ``HFLM`` with continuation-only log-likelihood scoring and a greedy decoding loop.

    ``encodings`` is an optional string -> token ids memo that outlives this object (the task
    cache keeps one per tokenizer), so a sweep tokenizes every prompt once; a 1-tuple key
    ``(string,)`` holds the string's tokens without special tokens. ``vocabulary_texts`` gives
    ``eval_tasks.stops.token_texts`` of the tokenizer (the task cache keeps them per tokenizer too).
    """

    def __init__(
        self,
        pretrained,
        tokenizer,
        batch_size: int | str = 8,
        *,
        encodings: dict | None = None,
        stock_shapes: bool = False,
        scored_logits: bool = False,
        vocabulary_texts: Callable[[], tuple[str, ...] | None] | None = None,
        decode_rows: int | None = None,
        cuda_graphs: bool = False,
        **hflm_options,
    ):
        super().__init__(pretrained=pretrained, tokenizer=tokenizer, batch_size=batch_size, **hflm_options)
        self._encodings = {} if encodings is None else encodings
        self._vocabulary_texts = vocabulary_texts or (lambda: token_texts(self.tokenizer))
        self.stock_shapes = stock_shapes  # every forward gets HFLM's shapes (module docstring)
        # With stock shapes: the output layer runs only at the positions a batch scores (module docstring).
        self.scored_logits = scored_logits
        self.decode_rows = decode_rows  # rows decoded together (eval_tasks/greedy.py); None: the batch size
        self._auto_batch: int | None = None
        self._cache_keyword = _cache_keyword(self.model)
        self._splits_at_lines = splits_at_lines(self.tokenizer)
        self._token_texts: tuple[str, ...] | None | bool = False  # False: not read yet
        self._triggers: dict[str, Triggers | None] = {}
        self._drops_full_mask: bool | None = None  # hf_generate_drops_full_mask's answer, once known
        # Stock shapes on CUDA with SDPA attention: decoding steps replayed as CUDA graphs; the chunks of
        # one call that share a shape share a graph, freed when the call ends (eval_tasks/step_graphs.py).
        self.step_graphs = StepGraphs(self._forward) if cuda_graphs and self._graphs_apply() else None

    # ----- tokenization -------------------------------------------------------------------------

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, left_truncate_len=None, **kwargs
    ):
        if add_special_tokens is not None or left_truncate_len or kwargs:
            return super().tok_encode(string, add_special_tokens, left_truncate_len, **kwargs)
        cached = self._encodings.get(string)
        if cached is None:
            # A tuple is immutable, so callers cannot change what the next run reads.
            cached = self._encodings[string] = tuple(super().tok_encode(string))
        return list(cached)

    def _raw_encode(self, string: str) -> list[int]:
        """The tokens of ``string`` alone, no special tokens (memo key: the string in a 1-tuple)."""
        cached = self._encodings.get((string,))
        if cached is None:
            cached = self._encodings[(string,)] = tuple(self.tokenizer.encode(string, add_special_tokens=False))
        return list(cached)

    def _prefill_raw(self, strings: Iterable[str]) -> None:
        missing = [string for string in dict.fromkeys(strings) if (string,) not in self._encodings]
        if missing:
            for string, ids in zip(
                missing, self.tokenizer(missing, add_special_tokens=False)["input_ids"], strict=True
            ):
                self._encodings[(string,)] = tuple(ids)

    def _prefill(self, strings: Iterable[str]) -> None:
        """Tokenize the strings ``tok_encode`` will be asked for in batched calls (the Rust
        tokenizer runs a batch in parallel), with the special-token rule ``tok_encode`` applies."""
        from lm_eval.models.utils import _add_special_kwargs, has_bos_prefix

        missing = [string for string in dict.fromkeys(strings) if string not in self._encodings]
        bos_text = self.tokenizer.decode(self.prefix_token_id)
        groups: dict[bool | None, list[str]] = {}
        for string in missing:
            settings = _add_special_kwargs(None, self.add_bos_token).get("add_special_tokens")
            groups.setdefault(False if has_bos_prefix(string, bos_text) else settings, []).append(string)
        for settings, group in groups.items():
            kwargs = {} if settings is None else {"add_special_tokens": settings}
            for string, ids in zip(group, self.tokenizer(group, **kwargs)["input_ids"], strict=True):
                self._encodings[string] = tuple(ids)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        self.prefill_pairs([request.args for request in requests])
        return super().loglikelihood(requests, disable_tqdm=True)

    def prefill_pairs(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Tokenize, in batches, every string ``_encode_pair`` will ask for on these pairs."""
        strings, raw = [], []
        for context, continuation in pairs:
            if context:
                context, continuation, start = self._move_spaces(context, continuation)
                strings.append(context)
                if start is None:
                    strings.append(context + continuation)
                else:
                    raw += [context[start:], context[start:] + continuation]
        self._prefill(strings)
        self._prefill_raw(raw)

    def _move_spaces(self, context: str, continuation: str) -> tuple[str, str, int | None]:
        """``TemplateLM._encode_pair``'s strings (trailing spaces of the context move to the
        continuation) and where the context's last hard line start is, if the split applies."""
        stripped = context.rstrip()
        continuation = context[len(stripped) :] + continuation
        start = tail_start(stripped) if self._splits_at_lines and self.backend == "causal" else None
        return stripped, continuation, start

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's (context tokens, continuation tokens); for a tokenizer whose tokens never span
        a line start, the continuation's from the context's last line alone
        (``eval_tasks/pair_split.py`` says why that is the same), else lm-eval's own."""
        context, continuation, start = self._move_spaces(context, continuation)
        if start is not None:
            context_tokens = self.tok_encode(context)
            tail = context[start:]
            tokens = continuation_tokens(
                context_tokens, self._raw_encode(tail), self._raw_encode(tail + continuation)
            )
            if tokens is not None:
                return context_tokens, tokens
        return super()._encode_pair(context, continuation)

    def _rows(self) -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        if self._auto_batch is None:
            # HFLM's own probe (a full-vocabulary log-softmax at max length) needs more memory than
            # anything run here, so its answer is a safe batch size for both phases.
            self._auto_batch = int(self._detect_batch_size())
        return self._auto_batch

    # ----- log-likelihood -----------------------------------------------------------------------

    def _loglikelihood_tokens(
        self, requests: list[Request], disable_tqdm: bool = False, override_bs: int | None = None
    ) -> list[tuple[float, bool]]:
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        rows = override_bs or self._rows()
        if self.stock_shapes:
            return self._stock_shaped_loglikelihoods(requests, rows)
        prefixes: dict[tuple[int, ...], _Prefix] = {}
        plan = []  # per request: (prefix, query id, continuation)
        for _, context, continuation in requests:
            assert len(context) > 0 and 0 < len(continuation) <= self.max_length
            # Exactly HFLM's model input: left-truncated to max_length + 1, last token dropped.
            window = (context + continuation)[-(self.max_length + 1) :][:-1]
            split = len(window) - len(continuation)
            prefix_tokens, query = tuple(window[:split]), tuple(window[split:])
            prefix = prefixes.setdefault(prefix_tokens, _Prefix(prefix_tokens))
            query_id = prefix.queries.setdefault(query, len(prefix.queries))
            plan.append((prefix, query_id, continuation))

        continuations = [continuation for _, _, continuation in requests]
        by_query: dict[tuple[int, int], list[int]] = {}
        for index, (prefix, query_id, _) in enumerate(plan):
            by_query.setdefault((id(prefix), query_id), []).append(index)

        results: list[tuple[float, bool] | None] = [None] * len(requests)

        def record(members: list[int], answers: list[tuple[float, bool]]) -> None:
            for index, answer in zip(members, answers, strict=True):
                results[index] = answer
                if requests[index][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)

        # A prefix read by one query (MMLU's one-token options, XWinograd) runs with its query as
        # one left-padded sequence; a prefix shared by several queries runs once, then its queries.
        single = [p for p in prefixes.values() if len(p.queries) == 1]
        shared = [p for p in prefixes.values() if len(p.queries) > 1]
        single.sort(key=lambda p: (-len(p.tokens) - len(next(iter(p.queries))), p.tokens))
        for start in range(0, len(single), rows):
            batch = single[start : start + rows]
            queries = [next(iter(prefix.queries)) for prefix in batch]
            logits = self._run_sequences(
                [prefix.tokens + query for prefix, query in zip(batch, queries)], queries
            )
            members = [by_query[(id(prefix), 0)] for prefix in batch]
            # Left padding: a query's logits are the last len(query) of the kept positions.
            offsets = [logits.shape[1] - len(query) for query in queries]
            for group, answers in zip(members, _score(logits, members, continuations, offsets), strict=True):
                record(group, answers)

        shared.sort(key=lambda p: (-len(p.tokens), p.tokens))
        for start in range(0, len(shared), rows):
            batch = shared[start : start + rows]
            cache = self._run_prefixes([p.tokens for p in batch]) if batch[0].tokens else None
            jobs = [
                (row, query, by_query[(id(prefix), query_id)])
                for row, prefix in enumerate(batch)
                for query, query_id in prefix.queries.items()
            ]
            jobs.sort(key=lambda job: -len(job[1]))
            for job_start in range(0, len(jobs), rows):
                chunk = jobs[job_start : job_start + rows]
                lengths = [len(batch[row].tokens) for row, _, _ in chunk]
                logits = self._run_queries(
                    cache, [row for row, _, _ in chunk], lengths, [q for _, q, _ in chunk]
                )
                members = [group for _, _, group in chunk]
                for group, answers in zip(
                    members, _score(logits, members, continuations, [0] * len(chunk)), strict=True
                ):
                    record(group, answers)
        return results

    def _stock_shaped_loglikelihoods(self, requests: list[Request], rows: int) -> list[tuple[float, bool]]:
        """HFLM's computation without its per-request loop. The batches are HFLM's: requests
        grouped by context + continuation minus its last token (one model input serves them all,
        read through the member with the longest continuation), groups ordered longest first, then
        by their tokens, ``rows`` at a time. Each input (HFLM's window: left-truncated to
        ``max_length + 1``, last token dropped) is right-padded with zeros and runs without an
        attention mask through HFLM's own ``_model_call``. Only the scored positions then get the
        log-softmax (``softmax_dtype``, else the logits' own dtype, as in HFLM): a row-wise
        operation, the same values as HFLM's over the whole batch. The greedy check reads those
        log-probabilities, and each sum is ``torch.sum`` over the gathered values in their dtype,
        as HFLM's ``float(logits.sum())``. So the forwards are HFLM's and the answers are HFLM's, in
        bfloat16 too (``bench/eval_speed.py`` measures it on a GPU; tests hold it on a CPU)."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (_, context, continuation) in enumerate(requests):
            assert len(context) > 0 and 0 < len(continuation) <= self.max_length
            groups.setdefault(tuple(context + continuation[:-1]), []).append(index)
        continuations = [continuation for _, _, continuation in requests]
        # Each group with the tokens of its longest continuation's request, longest first.
        order = []
        for group in groups.values():
            _, context, continuation = requests[max(group, key=lambda i: len(continuations[i]))]
            order.append((tuple(context + continuation), group))
        order.sort(key=lambda entry: (-len(entry[0]), entry[0]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for start in range(0, len(order), rows):
            inputs = [tokens[-(self.max_length + 1) :][:-1] for tokens, _ in order[start : start + rows]]
            batch = [group for _, group in order[start : start + rows]]
            ids = torch.zeros((len(batch), max(map(len, inputs))), dtype=torch.long)  # HFLM pads with 0
            for row, tokens in enumerate(inputs):
                ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            # A continuation is scored at the last len(continuation) positions of its input.
            offsets = [[len(tokens) - len(continuations[i]) for i in group] for tokens, group in zip(inputs, batch)]
            scored = _ScoredTokens.of(batch, continuations, offsets)
            if self.scored_logits:
                kept = sorted(set(scored.positions))
                logits = self._model_call_at(ids.to(self.device), kept)
                columns = torch.zeros(ids.shape[1], dtype=torch.long)
                columns[kept] = torch.arange(len(kept))
            else:
                logits, columns = self._model_call(ids.to(self.device)), None
            answers = _score_as_stock(logits, batch, scored, getattr(self, "softmax_dtype", None), columns)
            for group, group_answers in zip(batch, answers, strict=True):
                for index, answer in zip(group, group_answers, strict=True):
                    results[index] = answer
                    if requests[index][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
        return results

    def _model_call_at(self, ids: torch.Tensor, positions: list[int]) -> torch.Tensor:
        """HFLM's ``_model_call`` with the output layer applied at ``positions`` (the same for every
        row) only, through transformers' ``logits_to_keep``: logits (rows, len(positions), vocab).
        The network below the output layer sees HFLM's input unchanged (``use_cache`` the model's
        default, as HFLM leaves it)."""
        keep = torch.tensor(positions, dtype=torch.long, device=ids.device)
        return self._forward(ids, use_cache=None, logits_to_keep=keep).logits

    def _run_sequences(self, sequences: list[tuple[int, ...]], queries: list[tuple[int, ...]]):
        """Logits at the last (longest query) positions of left-padded whole sequences."""
        width = max(map(len, sequences))
        ids = torch.full((len(sequences), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, tokens in enumerate(sequences):
            ids[row, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
            mask[row, width - len(tokens) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(map(len, queries))
        device = self.device
        outputs = self._forward(
            ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=keep,
        )
        return outputs.logits

    def _forward(self, input_ids, use_cache: bool | None = True, **kwargs):
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ),
        ):
            if "past_key_values" in kwargs:
                kwargs[self._cache_keyword] = kwargs.pop("past_key_values")
            return self.model(input_ids=input_ids, use_cache=use_cache, **kwargs)

    def _run_prefixes(self, prefixes: Sequence[Sequence[int]]):
        """One forward over right-padded prefixes; returns their key/value cache.

        Right padding needs no mask here: a real position only attends to earlier real positions.
        Only the last position's logits are computed (and ignored)."""
        from transformers import DynamicCache

        width = max(map(len, prefixes))
        ids = torch.full((len(prefixes), width), self._pad_id, dtype=torch.long)
        for row, tokens in enumerate(prefixes):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        cache = DynamicCache()
        self._forward(ids.to(self.device), past_key_values=cache, logits_to_keep=1)
        return cache

    def _run_queries(self, cache, rows: list[int], prefix_lengths: list[int], queries: list[tuple[int, ...]]):
        """Logits [len(queries), longest query, vocab] for queries that each follow one cached prefix.

        Each query row gets a copy of its prefix's cache row; the mask hides that prefix's right
        padding and positions continue from the prefix's true length."""
        from transformers import DynamicCache

        width = max(map(len, queries))
        ids = torch.full((len(queries), width), self._pad_id, dtype=torch.long)
        for row, tokens in enumerate(queries):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        lengths = torch.tensor(prefix_lengths, dtype=torch.long)
        positions = lengths[:, None] + torch.arange(width)[None, :]
        kwargs = {"position_ids": positions.to(self.device)}
        if cache is not None:
            index = torch.tensor(rows, dtype=torch.long, device=self.device)
            selected = DynamicCache()
            for layer, (keys, values) in enumerate(_cache_tensors(cache)):
                selected.update(keys.index_select(0, index), values.index_select(0, index), layer)
            cached = _cache_tensors(cache)[0][0].shape[2]
            prefix_mask = torch.arange(cached)[None, :] < lengths[:, None]
            mask = torch.cat([prefix_mask, torch.ones(len(queries), width, dtype=torch.bool)], dim=1)
            kwargs |= {"past_key_values": selected, "attention_mask": mask.long().to(self.device)}
        return self._forward(ids.to(self.device), **kwargs).logits

    @property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.eot_token_id)

    # ----- generation ---------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if self.backend != "causal" or self.think_end_token is not None or not self._plain_greedy_model():
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(index)
        results: list[str | None] = [None] * len(requests)
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        for members in groups.values():
            gen_kwargs = requests[members[0]].args[1]
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_new = kwargs.pop("max_gen_toks")
            if not _greedy(kwargs):
                texts = super().generate_until([requests[i] for i in members], disable_tqdm=disable_tqdm)
                for index, text in zip(members, texts, strict=True):
                    results[index] = text
                continue
            contexts = [requests[i].args[0] for i in members]
            for index, text in zip(members, self._greedy(contexts, until, max_new), strict=True):
                results[index] = text
                self.cache_hook.add_partial("generate_until", (requests[index].args[0], gen_kwargs), text)
        return results

    def _plain_greedy_model(self) -> bool:
        config = getattr(self.model, "generation_config", None)
        return config is None or all(
            getattr(config, key, None) in allowed for key, allowed in _PLAIN_GREEDY.items()
        )

    def _eos_ids(self) -> set[int]:
        """HF generate's EOS tokens: the generation config's alone (none if it names none). The
        tokenizer's EOS is not one of them unless the config says so; lm-eval makes its text a stop
        string instead."""
        config = getattr(self.model, "generation_config", None)
        ids = getattr(config, "eos_token_id", None)
        if ids is None:
            return set()
        return set(ids if isinstance(ids, Iterable) else [ids])

    def _greedy(self, contexts: list[str], until: list[str], max_new: int) -> list[str]:
        """Greedy continuations of ``contexts``, cut like HFLM's."""
        max_context = self.max_length - max_new
        assert max_context > 0, (
            f"max_gen_toks {max_new} must be below the model's maximum length {self.max_length}"
        )
        self._prefill(contexts)
        # As HFLM's tok_batch_encode (the same special-token rule as tok_encode), left-truncated.
        whole = [self.tok_encode(context) for context in contexts]
        encoded = [tokens[-max_context:] for tokens in whole]
        # HFLM's order: by the untruncated length, longest first, then by the text.
        order = sorted(range(len(contexts)), key=lambda i: (-len(whole[i]), contexts[i]))
        stopping = Stopping(
            eos=frozenset(self._eos_ids()),
            stops=tuple(
                (stop, len(self.tokenizer.encode(stop, add_special_tokens=False)) + 2) for stop in until
            ),
            max_new=max_new,
            triggers=tuple(self._stop_triggers(stop) for stop in until),
            final=self._final_text_check(until) if self.stock_shapes else None,
        )
        decoder = GreedyDecoder(self._forward, self.tokenizer, self._pad_id, self._rows(), self.device,
                                static=self.stock_shapes, decode_rows=self.decode_rows,
                                drop_full_mask=self.hf_generate_drops_full_mask() if self.stock_shapes else True,
                                step_graphs=self.step_graphs)
        try:
            generated = decoder.run([encoded[i] for i in order], stopping)
        finally:
            if self.step_graphs is not None:  # lm-eval asks for a benchmark's generations in one call
                self.step_graphs.release()
        texts: list[str | None] = [None] * len(contexts)
        for index, tokens in zip(order, generated, strict=True):
            texts[index] = postprocess_generated_text(self.tok_decode(tokens), until, None)
        return texts

    def _final_text_check(self, until: list[str]) -> Callable[[list[int], bool], bool] | None:
        """``Stopping.final`` for HFLM's cut at ``until``: a row's text is final once it has had an
        EOS and its padding is a special token (dropped from the text), or once the text HFLM would
        cut it to ends far enough before its end (below). Only for byte-level BPE tokenizers
        (``eval_tasks/stops.py``), whose decoded text changes at most in its last
        ``_CHANGEABLE_TAIL`` characters as tokens are appended; None for any other.

        Why far enough: HFLM cuts at each stop string in turn (``s = s.split(term)[0]``). Let ``r``
        be where it cuts the text now, ``L`` the longest stop string and ``n`` their number. An
        occurrence starting before ``r + 1 + (n - k) * L`` ends before ``r + 1 + (n - k + 1) * L``;
        while that lies in the unchangeable text, the k-th split finds the same occurrences there
        in any longer text, so by induction over the splits the cut stays at ``r``."""
        terms = [term for term in until if term]  # HFLM's cut skips empty stop strings too
        if self._texts_of_tokens() is None or not terms:
            return None
        padding_dropped = self._pad_id in set(self.tokenizer.all_special_ids)
        reach = 1 + len(terms) * max(len(term) for term in terms) + _CHANGEABLE_TAIL

        def final(tokens: list[int], had_eos: bool) -> bool:
            if had_eos:
                return padding_dropped
            text = self.tok_decode(tokens)
            cut = len(postprocess_generated_text(text, terms, None))
            return cut < len(text) and cut + reach <= len(text)

        return final

    @property
    def decode_steps(self) -> str:
        """How greedy decoding steps ran: ``eager``, ``cuda graphs``, or eager because capturing failed."""
        if self.step_graphs is None:
            return "eager"
        if self.step_graphs.failed:
            return f"eager (cuda graphs failed: {self.step_graphs.failed})"
        return "cuda graphs"

    def _graphs_apply(self) -> bool:
        """Whether decoding steps can be CUDA graphs with no number changed: stock shapes (the fast
        path's refilling batches change shape every step), CUDA, no autocast, and SDPA attention, whose
        masked key columns are exact (eval_tasks/step_graphs.py)."""
        attention = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        return (self.stock_shapes and self.device.type == "cuda" and self.mixed_precision_dtype is None
                and attention == "sdpa")  # fmt: skip

    def hf_generate_drops_full_mask(self) -> bool:
        """Whether HF ``generate``, called as HFLM calls it, runs a batch without padding with no
        attention mask (transformers 5.24) or with its all-ones mask (5.17): the two take different
        attention kernels, so stock shapes must do what the installed version does. Found out
        once, from one tiny greedy call on this model."""
        if self._drops_full_mask is None:
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            masks = []

            def record(module, args, kwargs):
                masks.append(kwargs.get("attention_mask"))

            ids = torch.full((1, 2), self._pad_id, dtype=torch.long, device=self.device)
            hook = base.register_forward_pre_hook(record, with_kwargs=True)
            try:
                with torch.no_grad():
                    self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                                        do_sample=False, pad_token_id=self._pad_id, use_cache=True)
            finally:
                hook.remove()
            self._drops_full_mask = bool(masks) and masks[0] is None
        return self._drops_full_mask

    def _stop_triggers(self, stop: str) -> Triggers | None:
        """``eval_tasks/stops.py``: which tokens make the stop check decode (once per stop string)."""
        if stop not in self._triggers:
            self._triggers[stop] = stop_triggers(stop, self._texts_of_tokens())
        return self._triggers[stop]

    def _texts_of_tokens(self) -> tuple[str, ...] | None:
        """``eval_tasks.stops.token_texts`` of the tokenizer (None: not byte-level BPE), read once."""
        if self._token_texts is False:
            self._token_texts = self._vocabulary_texts()
        return self._token_texts


# How many of a byte-level BPE decoding's last characters a token appended can still change: the
# replacement characters of an incomplete UTF-8 sequence, or a space that
# ``clean_up_tokenization_spaces`` removes before punctuation (up to three either way).
_CHANGEABLE_TAIL = 4


def _greedy(kwargs: dict) -> bool:
    kwargs = copy.deepcopy(kwargs)
    do_sample = kwargs.pop("do_sample", None)
    temperature = kwargs.pop("temperature", 0.0)
    return not do_sample and temperature == 0.0 and not kwargs


def _cache_keyword(model) -> str:
    """The forward argument that takes a key/value cache: ``cache`` since transformers 5.2x,
    ``past_key_values`` before (still accepted, with a deprecation warning)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _cache_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers ``DynamicCache`` (its layout since 4.56)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


@dataclass(frozen=True)
class _ScoredTokens:
    """Every scored token of a batch: its logits row, its position in that row, its target, its
    request (numbered in ``members`` order) and its place in that request's continuation."""

    rows: list[int]
    positions: list[int]
    targets: list[int]
    owners: list[int]
    slots: list[int]

    @classmethod
    def of(cls, members: list[list[int]], continuations: Sequence, offsets: list[list[int]]) -> _ScoredTokens:
        """``members[r]`` are the requests read from row ``r``, request ``members[r][k]``'s
        continuation scored from position ``offsets[r][k]`` on."""
        tokens = cls([], [], [], [], [])
        request = 0
        for row, (group, starts) in enumerate(zip(members, offsets, strict=True)):
            for index, offset in zip(group, starts, strict=True):
                continuation = continuations[index]
                tokens.rows.extend([row] * len(continuation))
                tokens.positions.extend(range(offset, offset + len(continuation)))
                tokens.targets.extend(continuation)
                tokens.owners.extend([request] * len(continuation))
                tokens.slots.extend(range(len(continuation)))
                request += 1
        return tokens


def _scored_positions(
    logits: torch.Tensor, tokens: _ScoredTokens, columns: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """What scoring reads from ``logits``, position ``p`` being ``logits[:, columns[p]]`` (without
    ``columns``, ``logits[:, p]``): the logits rows of the scored positions (each (row, position)
    once, however many tokens read it) and, per scored token, its index into them, its target, its
    request and its place in that request's continuation."""
    device = logits.device
    positions = torch.tensor(tokens.positions, dtype=torch.long)
    if columns is not None:
        positions = columns[positions]
    flat = torch.tensor(tokens.rows, device=device) * logits.shape[1] + positions.to(device)
    unique, inverse = torch.unique(flat, return_inverse=True)
    selected = logits.reshape(-1, logits.shape[-1]).index_select(0, unique)
    return (selected, inverse,
            *(torch.tensor(values, device=device) for values in (tokens.targets, tokens.owners, tokens.slots)))  # fmt: skip


def _per_group(answers: list[tuple[float, bool]], members: list[list[int]]) -> list[list[tuple[float, bool]]]:
    out, start = [], 0
    for group in members:
        out.append(answers[start : start + len(group)])
        start += len(group)
    return out


def _score(
    logits: torch.Tensor, members: list[list[int]], continuations: Sequence, offsets: list[int]
) -> list[list[tuple[float, bool]]]:
    """(sum of log-probabilities, greedy?) of each continuation: ``members[r]`` are the requests
    read from logits row ``r``, whose continuation's first token is scored at position
    ``offsets[r]``. The log-softmax runs only at the scored positions, in float32."""
    starts = [[offset] * len(group) for group, offset in zip(members, offsets, strict=True)]
    selected, inverse, targets, owners, _ = _scored_positions(logits, _ScoredTokens.of(members, continuations, starts))
    selected = selected.float()
    token_log_probs = F.log_softmax(selected, dim=-1)[inverse, targets]
    misses = (selected.argmax(dim=-1)[inverse] != targets).long()
    requests = sum(map(len, members))
    sums = torch.zeros(requests, dtype=torch.float32, device=logits.device).index_add_(0, owners, token_log_probs)
    missed = torch.zeros(requests, dtype=torch.long, device=logits.device).index_add_(0, owners, misses)
    answers = [(float(value), miss == 0) for value, miss in zip(sums.tolist(), missed.tolist(), strict=True)]
    return _per_group(answers, members)


def _score_as_stock(
    logits: torch.Tensor,
    members: list[list[int]],
    tokens: _ScoredTokens,
    softmax_dtype,
    columns: torch.Tensor | None = None,
) -> list[list[tuple[float, bool]]]:
    """HFLM's (sum, greedy?) of each continuation, in its dtypes: ``members[r]`` are the requests
    read from logits row ``r``, ``tokens`` their scored tokens (read through ``columns`` as in
    ``_scored_positions``)."""
    selected, inverse, targets, owners, slots = _scored_positions(logits, tokens, columns)
    log_probs = F.log_softmax(selected, dim=-1, dtype=softmax_dtype)
    misses = log_probs.argmax(dim=-1)[inverse] != targets
    # One row per request, its token log-probabilities then zeros: a sum per row in the values'
    # dtype, as HFLM's torch.sum over the request's own tokens.
    longest = max(tokens.slots) + 1
    table = torch.zeros((sum(map(len, members)), longest), dtype=log_probs.dtype, device=logits.device)
    table[owners, slots] = log_probs[inverse, targets]
    missed = torch.zeros(table.shape, dtype=torch.bool, device=logits.device)
    missed[owners, slots] = misses
    sums, greedy = table.sum(dim=1).tolist(), (~missed.any(dim=1)).tolist()
    answers = [(float(value), bool(flag)) for value, flag in zip(sums, greedy, strict=True)]
    return _per_group(answers, members)
