"""One module per rule; each is a pure function over `ImageFacts` (and pod context)."""
