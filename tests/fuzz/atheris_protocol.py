"""Coverage-guided fuzzing of what the cloud does with bytes from the network (atheris, libFuzzer):
the bytes are cut into chunks, framed, decoded, and the messages applied to two edges' session
tables. Anything but a ProtocolError with a code the cloud sends back is a crash.

    python tests/fuzz/atheris_protocol.py -atheris_runs=1000000 [CORPUS_DIR]

With no corpus folder given it starts from one valid frame of each request type."""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from edgespec.config import SamplingParams
from edgespec.protocol.codec import ProtocolError, decode, encode
from edgespec.protocol.framing import FrameBuffer, frame
from edgespec.protocol.messages import Close, Draft, ErrorCode, Open, Ping, SparseDist, Verify
from tests.fuzz.session_driver import TwoEdges

MAX_FRAME_BYTES = 4096
SEEDS = [
    Open(sid=1, prompt=[1, 2, 3], sampling=SamplingParams(), max_new_tokens=8, draft=Draft([4, 5])),
    Open(sid=2, prompt=[1], sampling=SamplingParams(temperature=0.7, seed=3), max_new_tokens=8, cloud_decodes=True),
    Verify(sid=1, seq=1, start=5, draft=Draft([6], q=[SparseDist(ids=[6, 7], weights=[3, 1])])),
    Close(sid=1),
    Ping(nonce=7),
]


def one_input(data: bytes) -> None:
    """The first byte seeds how the rest is cut into reads and which edge each message comes from."""
    if not data:
        return
    chunking, stream = random.Random(data[0]), data[1:]
    edges, frames, position = TwoEdges(), FrameBuffer(MAX_FRAME_BYTES), 0
    while position < len(stream):
        size = chunking.randint(1, 64)
        try:
            bodies = frames.feed(stream[position : position + size])
        except ProtocolError as exc:
            assert exc.code is ErrorCode.FRAME_TOO_LARGE, exc.code
            return  # the cloud closes such a connection
        position += size
        for body in bodies:
            try:
                message = decode(body)
            except ProtocolError as exc:
                assert exc.code is ErrorCode.BAD_FRAME, exc.code
                return
            edges.apply(chunking.randrange(2), message)


def seed_corpus() -> str:
    folder = Path(tempfile.mkdtemp(prefix="edgespec-fuzz-corpus-"))
    for number, message in enumerate(SEEDS):
        (folder / f"seed-{number}").write_bytes(b"\x00" + frame(encode(message)))
    (folder / "all").write_bytes(b"\x01" + b"".join(frame(encode(message)) for message in SEEDS))
    return str(folder)


def main() -> None:
    argv = sys.argv if any(not arg.startswith("-") for arg in sys.argv[1:]) else [*sys.argv, seed_corpus()]
    atheris.instrument_all()  # edgespec is installed editable, past atheris's import hook
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
