"""Reproducible randomness keyed by (seed, stream, position).

Each decided position draws from its own generator, so a session's output does not depend on how
tokens were grouped into rounds or on a reconnect that re-opens it: the same seed gives the same
uniforms at the same position. The edge's draft sampling and the cloud's acceptance test use
different streams, so they are independent, as rejection sampling requires.
"""

from __future__ import annotations

import enum

import numpy as np


class Stream(enum.IntEnum):
    DRAFT = 1  # edge: drafting and edge-only decoding
    ACCEPT = 2  # cloud: the accept/reject test of each drafted token
    TARGET = 3  # cloud: sampling from p, the residual or the bonus


def uniform(seed: int, stream: Stream, position: int) -> float:
    """One uniform in [0, 1) for this seed, stream and absolute position."""
    return float(np.random.default_rng([seed, int(stream), position]).random())
