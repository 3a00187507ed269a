"""docs/ in step with the code: each command of `launch` and `trainer` has one section in docs/ whose option
tables list exactly the options its click command declares (every spelling, hidden options excepted), and
every relative link of README.md and docs/ leads to a file, and to a heading there, that exists.

The shape read here is described for writers in docs/README.md ("How the reference is written"): a section is
a heading that is the command itself (`### launch cluster up`), its options are the backticked `-x`/`--x`
spellings in the first cell of its table rows."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
# trainer fit and fine-tune take MXNet's options; their reference is trainer.md, with the table of deliberate
# differences from MXNet's scripts. They are checked there once that page is written, and only there.
TRAINER_DOC = DOCS / "trainer.md"
IN_TRAINER_DOC = ("trainer fit", "trainer fine-tune")

HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
# a heading that is exactly a command path, optionally in backticks: `launch`, `launch cluster up`, `trainer data`
COMMAND_HEADING = re.compile(r"^`?((?:launch|trainer)(?: [a-z0-9][a-z0-9-]*)*)`?$")
SPAN = re.compile(r"`([^`]+)`")
OPTION = re.compile(r"^-{1,2}[A-Za-z0-9][A-Za-z0-9_-]*$")
CELL_SPLIT = re.compile(r"(?<!\\)\|")
LINK = re.compile(r"(?<!\!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


# --- the commands, as click declares them ----------------------------------------------------------------

def command_tree() -> Dict[str, click.Command]:
    """'launch cluster up' -> its click command, for every visible command and group of both programs."""
    from mxlaunch.launcher.cli import cli as launch
    from mxlaunch.trainer.cli import cli as trainer

    found: Dict[str, click.Command] = {}

    def walk(command: click.Command, path: str, parent: Optional[click.Context]) -> None:
        found[path] = command
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=path.rsplit(" ", 1)[-1], parent=parent)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, f"{path} {name}", ctx)

    walk(launch, "launch", None)
    walk(trainer, "trainer", None)
    return found


def declared_options(command: click.Command) -> Set[str]:
    """Every spelling of every visible option (`--efs` and `--no-efs` alike); help is added to every command
    by click and documented once, not per command."""
    spellings = set()
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            spellings.update(param.opts)
            spellings.update(param.secondary_opts)
    return spellings - {"-h", "--help"}


# --- the docs, as written --------------------------------------------------------------------------------

def prose_lines(text: str) -> Iterator[str]:
    """The lines outside fenced code blocks: a usage example is not a heading, a table or a link."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def command_sections(text: str) -> List[Tuple[str, List[str]]]:
    """(command path, the lines of its section) for each heading of levels 2-4 that is a command path; a
    section ends at the next heading of its level or above."""
    sections: List[Tuple[str, int, List[str]]] = []
    current: Optional[Tuple[str, int, List[str]]] = None
    for line in prose_lines(text):
        heading = HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            if current is not None and level <= current[1]:
                current = None
            named = COMMAND_HEADING.match(heading.group(2))
            if named and 2 <= level <= 4:
                current = (named.group(1), level, [])
                sections.append(current)
            continue
        if current is not None:
            current[2].append(line)
    return [(path, lines) for path, _, lines in sections]


def documented_options(lines: List[str]) -> Set[str]:
    """The option spellings in the first cell of the section's table rows."""
    found = set()
    for line in lines:
        stripped = line.strip()
        if not stripped.startswith("|"):
            continue
        cells = CELL_SPLIT.split(stripped.strip("|"))
        for span in SPAN.findall(cells[0]):
            word = span.split()[0] if span.split() else ""
            if OPTION.match(word):
                found.add(word)
    return found


def sections_by_command(files: List[Path]) -> Dict[str, List[Tuple[Path, Set[str]]]]:
    found: Dict[str, List[Tuple[Path, Set[str]]]] = {}
    for path in files:
        for command, lines in command_sections(path.read_text(encoding="utf-8")):
            found.setdefault(command, []).append((path, documented_options(lines)))
    return found


def option_mismatch(command: str, where: str, declared: Set[str], documented: Set[str]) -> List[str]:
    """One line per option the docs lack or have in excess, naming the command and the option."""
    return ([f"{command}: {option} is an option (--help) but not documented in {where}"
             for option in sorted(declared - documented)]
            + [f"{command}: {option} is documented in {where} but is no option of the command"
               for option in sorted(documented - declared)])


def doc_files() -> List[Path]:
    return sorted(DOCS.glob("*.md"))


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


COMMANDS = command_tree()


def test_every_section_documents_a_command_once():
    found = sections_by_command(doc_files())
    problems = [f"{command}: a section in {relative(path)}, but there is no such command"
                for command, places in found.items() if command not in COMMANDS for path, _ in places]
    problems += [f"{command}: documented {len(places)} times ({', '.join(relative(p) for p, _ in places)})"
                 for command, places in found.items() if len(places) > 1]
    problems += [f"{command}: documented in {relative(path)}; its place is {relative(TRAINER_DOC)}"
                 for command in IN_TRAINER_DOC for path, _ in found.get(command, []) if path != TRAINER_DOC]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_documented_options_are_the_declared_ones(command):
    if command in IN_TRAINER_DOC and not TRAINER_DOC.exists():
        pytest.skip(f"{relative(TRAINER_DOC)} is not written yet: {command}'s options are checked there once it is")
    files = [TRAINER_DOC] if command in IN_TRAINER_DOC else [p for p in doc_files() if p != TRAINER_DOC]
    places = sections_by_command(files).get(command)
    assert places, (f"{command}: no section in {', '.join(relative(p) for p in files)} "
                    f"(a heading `### {command}` with its options' table)")
    path, documented = places[0]
    problems = option_mismatch(command, relative(path), declared_options(COMMANDS[command]), documented)
    assert not problems, "\n".join(problems)


# --- links -----------------------------------------------------------------------------------------------

def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (code, emphasis and link markup dropped), lowercase,
    punctuation other than '-' and '_' removed, each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> Set[str]:
    """Every heading's anchor, duplicates numbered as GitHub numbers them (`name`, `name-1`, ...)."""
    seen: Dict[str, int] = {}
    found = set()
    for line in prose_lines(text):
        heading = HEADING.match(line)
        if not heading:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_targets(text: str) -> Iterator[str]:
    """Targets of inline links, images and reference definitions, outside code blocks and code spans."""
    for line in prose_lines(text):
        reference = REFERENCE.match(line)
        if reference:
            yield reference.group(1)
            continue
        line = SPAN.sub("", line)
        yield from LINK.findall(line)
        yield from IMAGE.findall(line)


def broken_links(path: Path, pending: Tuple[Path, ...] = ()) -> List[str]:
    """One line per relative link of `path` whose file or heading does not exist. A link into a page in
    `pending` (written by someone else, not yet merged) is checked once that page exists."""
    problems = []
    for target in link_targets(path.read_text(encoding="utf-8")):
        if SCHEME.match(target):  # https:, mailto:: not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            if destination not in pending:
                problems.append(f"{relative(path)}: link {target}: {file_part} does not exist")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination.read_text(encoding="utf-8")):
            problems.append(f"{relative(path)}: link {target}: no heading makes #{anchor} in {relative(destination)}")
    return problems


@pytest.mark.parametrize("page", [README, *doc_files()], ids=relative)
def test_relative_links_lead_somewhere(page):
    problems = broken_links(page, pending=(TRAINER_DOC,))
    assert not problems, "\n".join(problems)


# --- files named in the docs --------------------------------------------------------------------------------

# The project's own folders: a backticked path starting with one of them names a file of this repository (where
# a behaviour lives), and must keep up when that file moves. Other paths (`runs/demo`, `/efs/data`) are examples.
SOURCE_FOLDERS = ("launcher", "trainer", "infra", "templates", "mxlaunch", "tests", "testkit", "bench", "docs", ".ci")
REPO_PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)+/?$")


def missing_paths(path: Path) -> List[str]:
    problems = []
    for span in SPAN.findall(path.read_text(encoding="utf-8")):
        if REPO_PATH.match(span) and span.split("/")[0] in SOURCE_FOLDERS and not (REPO / span).exists():
            problems.append(f"{relative(path)}: `{span}` is no file or folder of the repository")
    return problems


@pytest.mark.parametrize("page", [README, *doc_files()], ids=relative)
def test_named_repository_paths_exist(page):
    problems = missing_paths(page)
    assert not problems, "\n".join(problems)


# --- the checks themselves fail when they should ---------------------------------------------------------

SAMPLE = """# Reference

### launch demo

```
### launch ignored  (a code block is not a heading)
```

| option | meaning |
|---|---|
| `-n`, `--num-workers` N | workers |
| `--efs` / `--no-efs` | shared disk |
| `--gone` | an option the command no longer has |
| text | `--not-an-option-cell` in another column |

## Next

| `--outside` | after the section |
"""


def test_an_option_added_or_removed_without_the_docs_is_named():
    @click.command()
    @click.option("-n", "--num-workers", type=int)
    @click.option("--efs/--no-efs", default=True)
    @click.option("--new-option")
    @click.option("--secret", hidden=True)
    def demo(num_workers, efs, new_option, secret):
        pass

    sections = command_sections(SAMPLE)
    assert [command for command, _ in sections] == ["launch demo"]
    documented = documented_options(sections[0][1])
    assert documented == {"-n", "--num-workers", "--efs", "--no-efs", "--gone"}
    assert option_mismatch("launch demo", "sample.md", declared_options(demo), documented) == [
        "launch demo: --new-option is an option (--help) but not documented in sample.md",
        "launch demo: --gone is documented in sample.md but is no option of the command"]


def test_a_broken_link_or_anchor_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## The cluster's venv: on EFS\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#the-clusters-venv-on-efs) [gone](docs/b.md) [bad](docs/a.md#nothing)\n"
                    "`[in code](docs/c.md)` [web](https://example.org/x) [self](#top)\n\n# Top\n")
    assert broken_links(page) == ["README.md: link docs/b.md: docs/b.md does not exist",
                                  "README.md: link docs/a.md#nothing: no heading makes #nothing in docs/a.md"]
    assert broken_links(page, pending=((tmp_path / "docs" / "b.md").resolve(),)) == [
        "README.md: link docs/a.md#nothing: no heading makes #nothing in docs/a.md"]


def test_a_moved_module_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "launcher" / "jobs").mkdir(parents=True)
    (tmp_path / "launcher" / "jobs" / "job.py").write_text("")
    page = tmp_path / "README.md"
    page.write_text("`launcher/jobs/job.py` `launcher/jobs/gone.py` `runs/demo` `/efs/data/x.rec` `a b/c`\n")
    assert missing_paths(page) == ["README.md: `launcher/jobs/gone.py` is no file or folder of the repository"]
