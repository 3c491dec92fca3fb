import sys

from collector import process

process.prepare()

from collector.cli import main  # noqa: E402  (after prepare: it loads pyarrow, delta-rs, grpc)

sys.exit(main())
