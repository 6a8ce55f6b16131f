"""The one record every task yields, whatever its source format."""

from __future__ import annotations

from dataclasses import dataclass, field

from metalora.provenance import sha256_text


@dataclass(frozen=True)
class Example:
    """A prompt and the text the model should produce after it.

    For multiple-choice items ``choices`` lists every answer text and ``answer_index`` points at
    the correct one (``target == choices[answer_index]``).
    """

    task: str
    prompt: str
    target: str
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def prompt_hash(self) -> str:
        """Identity used to prove that training and evaluation items never overlap."""
        return sha256_text(self.prompt)
