"""The README's settings reference is the one the settings object generates (it cannot drift)."""

from __future__ import annotations

from tapewatch.settings import Settings
from tapewatch.settings_doc import readme_section
from tests.helpers import ROOT


def test_readme_settings_reference_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme_section() in readme, "run `tapewatch settings --markdown` and paste it into the README"
    for name in Settings.model_fields:
        assert f"`TAPEWATCH_{name.upper()}`" in readme
