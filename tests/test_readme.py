"""README.md's Python snippets run as written and print what the README shows.

A ```python block followed directly by a ```text block must print exactly that text.
"""
import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```\n(?:\n```text\n(.*?)```)?", README.read_text(), flags=re.S)


def test_readme_has_python_snippets():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs_and_prints_what_the_readme_shows(index, tmp_path, monkeypatch):
    code, expected = BLOCKS[index]
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md snippet {index + 1}", "exec"), {"__name__": "__readme__"})
    if expected:
        assert out.getvalue() == expected
