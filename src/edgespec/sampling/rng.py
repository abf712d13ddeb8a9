"""Reproducible randomness keyed by (seed, stream, position).

Each decided position draws from its own generator, so a session's output does not depend on how
tokens were grouped into rounds or on a reconnect that re-opens it: the same seed gives the same
uniforms at the same position. The edge's draft sampling and the cloud's acceptance test use
different streams, so they are independent, as rejection sampling requires.

The generator is counter-based: a BLAKE2b hash of the key, whose output is indistinguishable from
random. The cloud draws up to 2k + 1 uniforms per round on its hot path, so speed matters: this
takes about 0.6 µs, a seeded numpy generator per draw took 9 µs.
"""

from __future__ import annotations

import enum
import hashlib
import struct

_KEY = struct.Struct("<QBQ")  # seed (< 2**63), stream, position
_UNIT = 1.0 / (1 << 53)  # a double holds 53 random bits


class Stream(enum.IntEnum):
    DRAFT = 1  # edge: drafting and edge-only decoding
    ACCEPT = 2  # cloud: the accept/reject test of each drafted token
    TARGET = 3  # cloud: sampling from p, the residual or the bonus


def uniform(seed: int, stream: Stream, position: int) -> float:
    """One uniform in [0, 1) for this seed, stream and absolute position."""
    digest = hashlib.blake2b(_KEY.pack(seed, stream, position), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 11) * _UNIT
