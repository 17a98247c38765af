"""Dollar signs in the labs' markdown render as the author meant.

JupyterLab's markdown renderer treats text between two unescaped dollar signs as LaTeX, so
"$0.20 per million requests and $0.0123 per hour" turns into italic maths with the spaces
gone. The rule these tests enforce, over every lab's markdown:

- a dollar sign followed by a digit is money and must be written ``\\$`` (maths that starts
  with a digit is written ``${2}^n$`` instead, which no lab needs today);
- outside code spans and fenced blocks, unescaped single dollar signs come in pairs, so no
  stray one opens a formula that swallows the rest of the paragraph.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

LABS = Path(__file__).resolve().parents[1] / "labs"
NOTEBOOKS = sorted(LABS.glob("*.ipynb"))

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
_DISPLAY_MATH = re.compile(r"\$\$.+?\$\$", re.DOTALL)
_DOLLAR = re.compile(r"(?<!\\)\$")


def prose(markdown: str) -> str:
    """Markdown with fenced blocks, code spans and $$display maths$$ blanked out.

    Blanking keeps offsets, so a reported position points into the original text.
    """
    for pattern in (_FENCE, _CODE_SPAN, _DISPLAY_MATH):
        markdown = pattern.sub(lambda m: " " * len(m.group()), markdown)
    return markdown


def dollar_problems(markdown: str) -> list[str]:
    """What is wrong with the dollar signs of one markdown text, each with its line."""
    text = prose(markdown)
    problems = []
    positions = [m.start() for m in _DOLLAR.finditer(text)]
    for at in positions:
        if text[at + 1 : at + 2].isdigit():
            line = text.count("\n", 0, at) + 1
            problems.append(f"line {line}: money '{markdown[at:at + 12].split()[0]}' must be written \\$")
    if len(positions) % 2:
        line = text.count("\n", 0, positions[-1]) + 1
        problems.append(f"line {line}: an unpaired $ starts maths that never ends; write \\$")
    return problems


@pytest.mark.parametrize("markdown, expected", [
    ("costs $0.20 per million and $0.0123 per hour", ["money '$0.20'", "money '$0.0123'"]),
    ("costs \\$0.20 per million and \\$0.0123 per hour", []),
    ("the formula $e^{-\\lambda T}$ and `$PORT` and\n```bash\necho $1 $2\n```", []),
    ("$$\\sum_i x_i$$ then a lone $ sign", ["unpaired"]),
    ("price \\$5, gap $L = \\lambda W$", []),
])
def test_the_rule(markdown, expected):
    problems = dollar_problems(markdown)
    assert len(problems) == len(expected), problems
    for problem, words in zip(problems, expected):
        assert words in problem


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_lab_markdown_dollars(path):
    nb = nbformat.read(path, as_version=4)
    problems = [
        f"{path.name}: cell {cell.get('id')}: {problem}"
        for cell in nb.cells if cell.cell_type == "markdown"
        for problem in dollar_problems(cell.source)
    ]
    assert not problems, "\n".join(problems)


def test_readme_times_are_the_labs_own():
    """The README's lab table gives each lab the time its own first cell gives."""
    readme = (LABS.parent / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d\d) \|.*\| ([^|]*?) \|$", readme, re.MULTILINE))
    for path in NOTEBOOKS:
        said = re.search(r"\(about ([\d–-]+) minutes\)", nbformat.read(path, as_version=4).cells[0].source)
        assert said, f"{path.name}: the first cell should say how long the lab takes, '(about N minutes)'"
        assert rows.get(path.name[:2]) == f"{said.group(1)} min", f"README row {path.name[:2]}: {rows.get(path.name[:2])!r}"
