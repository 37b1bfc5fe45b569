"""neurospeech.tools: simulate, replay, listen, bench, analyses."""

__all__: list[str] = []
