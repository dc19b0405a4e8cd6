"""Refusals carry a code and parameters; the reader's sentence is made when it is shown.

A service raises `AudienceError("duplicate_contact", id=12)`; `str(error)` inside a request
gives the sentence in the reader's language, from the messages table of the error's class.
An unknown code reads as itself, so an older caller passing a finished sentence still works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class Refusal(Exception):
    messages: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params

    def sentence_params(self) -> dict[str, Any]:
        """The parameters as the sentence shows them (a subclass turns codes into labels here,
        at show time, in the reader's language)."""
        return self.params

    def __str__(self) -> str:
        message = self.messages.get(self.code)
        return str(message) % self.sentence_params() if message is not None else self.code
