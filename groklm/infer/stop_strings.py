"""Stop strings over streamed text: release what is safe, hold back what may begin a stop string.

A stop string can arrive split over several tokens ("\\n\\nUser:" as "\\n", "\\nUs", "er:"), so
text that ends with the start of one is held until the next piece rules it in (the reply is cut
before it) or out (the held text is released). The engine and the hf backend both stream
through this.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopStrings:
    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.held = ""  # released nothing of this yet: it may begin a stop string
        self.hit = False  # a stop string was found: the text ends before it

    def push(self, text: str) -> str:
        """The text that may be shown now, given the next piece. After a hit, nothing more."""
        if self.hit:
            return ""
        if not self.stops:
            return text
        pending = self.held + text
        cut = min((i for i in (pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.held, self.hit = "", True
            return pending[:cut]
        keep = max((k for s in self.stops for k in range(1, len(s)) if pending.endswith(s[:k])), default=0)
        self.held = pending[len(pending) - keep :]
        return pending[: len(pending) - keep]

    def flush(self) -> str:
        """The text is over: whatever was held is not a stop string after all."""
        held, self.held = self.held, ""
        return held
