"""The README stays a short entry point and the docs stay one home per fact: README at most 200 lines, every
relative link (and its #anchor) resolves, no table row appears twice across README.md and docs/, and the
README's test command is the one CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a '#' in a code block is no heading
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_readme_is_at_most_200_lines():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 200, f"README.md has {n} lines; long guides belong in docs/"


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading in {dest.name})")
    assert not broken, broken


def test_no_table_row_appears_twice():
    """A table copied into a second page drifts from the first; link to it instead."""
    seen: dict[str, str] = {}
    twice = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        for k, line in enumerate(lines):
            is_row = line.startswith("|") and not re.fullmatch(r"[|\-: ]+", line)
            is_header = k + 1 < len(lines) and re.fullmatch(r"\|[-|: ]+\|", lines[k + 1])
            if is_row and not is_header:
                if line in seen:
                    twice.append(f"{page.name} and {seen[line]}: {line[:80]}")
                seen.setdefault(line, page.name)
    assert not twice, twice


def test_the_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Tests\n+```bash\n(.*?)```", readme, re.S)
    assert block, "README.md lost its ## Tests section with the test command"
    command = block.group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci, f"README's test command {command!r} is not a line of .ci/run"
