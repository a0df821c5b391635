"""The documents hold together: every relative link in README.md and docs/ reaches a file (and a heading, where it
names one), every command in the README's table is one `ltx2train` has, and the README stays an index."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_every_relative_link_resolves():
    broken = []
    for doc in DOCUMENTS:
        for target in LINK.findall(doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_every_command_in_the_readme_exists():
    from ltx2train.cli import build_parser

    parser = build_parser()
    commands = set(next(a for a in parser._actions if a.choices and "train" in a.choices).choices)
    table = ROOT.joinpath("README.md").read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `ltx2train ([\w-]+)", table, re.M)
    assert named and sorted(set(named) - commands) == []
    assert sorted(commands - set(named)) == []  # and the table lists every command


def test_the_readme_is_an_index_of_docs():
    readme = ROOT.joinpath("README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall(readme) if t.startswith("docs/")}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert sorted(pages - linked) == []  # every page is reachable from the README


def test_the_exit_code_table_is_the_codes_the_cli_uses():
    from ltx2train.utils.errors import EXIT_CODES

    page = ROOT.joinpath("docs", "observability.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", page.split("<!-- exit-codes", 1)[1], re.M)
    assert {int(code): meaning for code, meaning in rows} == EXIT_CODES
