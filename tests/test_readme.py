"""The README documents what the code does: its configuration table matches the settings."""

from __future__ import annotations

import re

from collector.config import Config
from tests.conftest import ROOT


def _documented() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `--([a-z-]+)` \| `([^`]*)` \|", section, re.M))


def test_every_setting_is_documented_with_its_default() -> None:
    documented = _documented()
    settings = {f.name.replace("_", "-"): f for f in Config.settings()}
    assert set(documented) == set(settings)
    defaults = Config()
    for flag, shown in documented.items():
        f = settings[flag]
        # What the README shows must parse to the default the code uses.
        assert f.metadata["parse"](shown) == getattr(defaults, f.name), flag
