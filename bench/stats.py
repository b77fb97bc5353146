"""Small statistics shared by the bench scripts."""


def percentile(values: list[float], p: float) -> float:
    """The `p`-th percentile (0-100) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100.0 * len(ordered)))]
