"""Coverage-guided fuzzing of the decode → flatten path with atheris (``make fuzz``).

    .venv/bin/python tests/fuzz_atheris.py -runs=200000 tests/fuzz_corpus

The first byte picks the signal and the encoding; the rest is the body. Anything but a
successful flatten or an InvalidArgument is a crash. The corpus starts from the captures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from collector.codec import JSON, PROTOBUF, decode_request
    from collector.errors import InvalidArgument
    from collector.pipeline import flatten_request
    from collector.signals import SIGNALS


def one_input(data: bytes) -> None:
    if not data:
        return
    signal = SIGNALS[data[0] % 3]
    media = JSON if data[0] & 0x80 else PROTOBUF
    try:
        flatten_request(signal, decode_request(signal, data[1:], media))
    except InvalidArgument:
        pass


def seed_corpus(directory: Path) -> None:
    captures = Path(__file__).resolve().parent.parent.parent / "shared" / "captures"
    directory.mkdir(parents=True, exist_ok=True)
    for path in captures.glob("*.pb"):
        selector = 0 if ".metrics." in path.name else 1
        (directory / path.name).write_bytes(bytes([selector]) + path.read_bytes())


if __name__ == "__main__":
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    for c in corpus:
        seed_corpus(Path(c))
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
