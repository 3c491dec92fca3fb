"""Hatch build hook: compile the native core (native/, Rust) into ``collector/_native`` when a
Rust toolchain is there. Without one, or if the build fails, the package installs as pure
Python and says so here and once at start-up: the Python flatteners are a complete fallback.

``COLLECTOR_NATIVE_BUILD=0`` skips the build; ``=require`` makes a failed build an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

CRATE = Path(__file__).resolve().parent
TARGET = "collector/_native" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        mode = os.environ.get("COLLECTOR_NATIVE_BUILD", "auto").strip().lower()
        if mode in ("0", "no", "off"):
            return self._without("COLLECTOR_NATIVE_BUILD=0")
        cargo = shutil.which("cargo")
        if cargo is None:
            return self._without("no Rust toolchain (cargo) on PATH", mode)
        built = subprocess.run(
            [cargo, "build", "--release", "--locked", "--manifest-path", str(CRATE / "Cargo.toml")],
            cwd=CRATE,
            stdout=sys.stderr,
        )
        library = CRATE / "target" / "release" / "lib_native.so"
        if built.returncode != 0 or not library.exists():
            return self._without(f"cargo build failed (exit {built.returncode})", mode)
        if version == "editable":
            # The source tree is what an editable install imports: the module goes beside it,
            # as a new file renamed over the old one. Copied over it in place, it would change
            # under the processes that have it loaded (tests running `make image`), and crash
            # them.
            target = Path(self.root) / TARGET
            partial = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.copyfile(library, partial)
            os.replace(partial, target)
        else:
            build_data["force_include"][str(library)] = TARGET
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def _without(self, why: str, mode: str = "auto") -> None:
        if mode == "require":
            raise RuntimeError(f"the native core was not built: {why}")
        print(f"otlp-delta-collector: pure Python, native core not built: {why}", file=sys.stderr)
