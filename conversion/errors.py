"""The one exception type of the converter: every problem found, reported together."""

from __future__ import annotations


class ConversionError(ValueError):
    """A checkpoint cannot be converted. `problems` lists every problem found; the message shows them all."""

    def __init__(self, problems: list[str] | str, context: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.context = context
        super().__init__(self._format())

    def _format(self) -> str:
        head = self.context or "cannot convert the checkpoint"
        if len(self.problems) == 1:
            return f"{head}: {self.problems[0]}"
        return head + ":\n" + "\n".join(f"  - {problem}" for problem in self.problems)

    def with_context(self, context: str) -> "ConversionError":
        return ConversionError(self.problems, context)
