"""The user-facing docs stay true: every ``vmunet`` command they show parses, every repo path and
``vmunet.*`` name they mention exists, every link between them lands on a file and heading.

What is checked comes from the markdown (README.md, docs/*.md); what it is checked against is the
real CLI parser (argparse for the plain subcommands, the project's LightningCLI parser for
fit/validate/test), the checkout's files and the importable package.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

from vmunet.cli import LIGHTNING_COMMANDS, build_parser, lightning_argv

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```")
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# repo paths worth checking: under a tracked top-level folder, or a tracked top-level file
REPO_PATH = re.compile(
    r"(?<![\w./~-])((?:vmunet|experiments|benchmarks|tests|docs|notebooks|\.ci)/[\w./*-]*[\w*]"
    r"|Makefile|pyproject\.toml|constraints\.txt|environment\.yml)(?:::(\w+))?"
)
DOTTED = re.compile(r"^vmunet(?:\.\w+)+$")
# written by a run or a build, not part of a checkout
GENERATED = ("vmunet/ops/__pycache__",)


def _doc_parts(path: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(code lines, prose lines) of a markdown file, with their 1-based line numbers; code lines
    ending in a backslash are joined with the next (shell continuation)."""
    code: list[tuple[int, str]] = []
    prose: list[tuple[int, str]] = []
    in_code = False
    pending: tuple[int, str] | None = None
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line.strip()):
            in_code = not in_code
            continue
        if not in_code:
            prose.append((no, line))
            continue
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        else:
            pending = (no, line)
        if pending[1].rstrip().endswith("\\"):
            pending = (pending[0], pending[1].rstrip()[:-1])
            continue
        if re.match(r"\s+\[-", pending[1]) and code:  # a usage line continued: [--more] [--options]
            code[-1] = (code[-1][0], code[-1][1] + " " + pending[1].strip())
        else:
            code.append(pending)
        pending = None
    return code, prose


def _shell_commands(line: str) -> list[list[str]]:
    """The ``vmunet`` invocations on one shell line (env assignments and ``.venv/bin/`` dropped).

    Output shown in a code block (``vmunet fit: error: ...``) is not a command."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    commands: list[list[str]] = []
    current: list[str] | None = None
    at_start = True
    for word in words:
        if word in ("&&", "||", ";", "|"):
            current, at_start = None, True
            continue
        if at_start:
            if re.fullmatch(r"\w+=\S*", word) or word in ("nice", "-n", "10", "timeout"):
                continue
            at_start = False
            if word in ("vmunet", ".venv/bin/vmunet"):
                current = []
                commands.append(current)
            continue
        if current is not None:
            current.append(word)
    return [c for c in commands if c and not c[0].endswith(":") and not c[0].startswith("(")]


def _is_template(argv: list[str]) -> bool:
    """A usage line (``[--seed 0]``, ``auto|cpu``, ``DIR``, ``<folder>``) rather than a runnable command."""
    return any(re.search(r"[][|<>]|^[A-Z][A-Z_]*$", w) for w in argv[1:])


def _cases() -> tuple[list, list]:
    """(commands from code blocks, inline `vmunet ...` spans) with their doc:line."""
    blocks, spans = [], []
    for doc in DOCS:
        code, prose = _doc_parts(doc)
        for no, line in code:
            for argv in _shell_commands(line):
                blocks.append(pytest.param(argv, id=f"{doc.name}:{no}"))
        for no, line in prose:
            for span in INLINE.findall(line):
                if span.startswith("vmunet ") and "--" in span:
                    spans.append(pytest.param(span, id=f"{doc.name}:{no}"))
    return blocks, spans


BLOCK_COMMANDS, INLINE_COMMANDS = _cases()


class _Parsed(Exception):
    pass


_LIGHTNING_PARSER: list = []


def lightning_parser():
    """The real ``vmunet fit|validate|test`` parser, built as `vmunet` builds it, without running."""
    if not _LIGHTNING_PARSER:
        from vmunet.training import cli as tcli

        class Probe(tcli.VMUNetCLI):
            def parse_arguments(self, parser, args):
                raise _Parsed(parser)

        real = tcli.VMUNetCLI
        tcli.VMUNetCLI = Probe
        try:
            tcli._lightning_cli(["fit"])
        except _Parsed as got:
            _LIGHTNING_PARSER.append(got.args[0])
        finally:
            tcli.VMUNetCLI = real
    return _LIGHTNING_PARSER[0]


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _walk(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[argparse.ArgumentParser], list[str]]:
    """Follow subcommand words (``synapse|isic`` names alternatives) to the parsers they select."""
    parsers = [parser]
    for i, word in enumerate(words):
        choices = _subparsers(parsers[0])
        names = word.split("|")
        if not choices or not all(n in choices for n in names):
            return parsers, words[i:]
        parsers = [choices[n] for n in names]
    return parsers, []


def _flags(text: str) -> list[str]:
    return [f.split("=")[0] for f in re.findall(r"(?<![\w-])(--?[A-Za-z][\w.-]*[\w])", text)]


@pytest.mark.parametrize("argv", BLOCK_COMMANDS)
def test_every_command_in_a_code_block_parses(argv):
    lightning = lightning_argv(argv)  # `vmunet -v fit ...`: the global -v is vmunet's, the rest LightningCLI's
    if lightning is not None:
        argv = lightning[1]
    if _is_template(argv):  # a usage line: its option names must exist
        check_options(argv[0], argv, " ".join(argv))
        return
    with contextlib.redirect_stdout(io.StringIO()):  # --help / --print_config print and exit 0
        try:
            if argv[0] in LIGHTNING_COMMANDS:
                lightning_parser().parse_args(argv)  # jsonargparse's ArgumentError on a bad key
            else:
                build_parser().parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                pytest.fail(f"`vmunet {' '.join(argv)}` is refused by the parser")


@pytest.mark.parametrize("span", INLINE_COMMANDS)
def test_every_inline_command_names_real_options(span):
    words = span.split()[1:]
    check_options(words[0], words, span)


def check_options(command: str, words: list[str], text: str) -> None:
    """Every ``--flag`` in ``text`` is an option of the subcommand ``words`` select."""
    command = command.split("|")[0]
    text, _, passed_on = text.partition(" -- ")
    if passed_on:  # `vmunet ablate ... -- --trainer.max_epochs 5`: options for every fit
        check_options("fit", ["fit"], passed_on)
    if command in LIGHTNING_COMMANDS:
        sub = lightning_parser()._subcommands_action._name_parser_map[command]
        known = set(sub._option_string_actions)
        for flag in _flags(text):
            # --data.init_args.root: the data class comes from the config; its group must exist
            assert flag in known or flag.split(".")[0] in known, f"{flag} is not an option of `vmunet {command}`"
        return
    parsers, _ = _walk(build_parser(), words)
    assert parsers[0].prog != "vmunet", f"`{text}`: no such subcommand"
    for parser in parsers:
        for flag in _flags(text):
            assert flag in parser._option_string_actions, f"{flag} is not an option of `{parser.prog}`"


def _mentioned_paths() -> list:
    cases = []
    for doc in DOCS:
        code, prose = _doc_parts(doc)
        texts = [(no, line) for no, line in code]
        texts += [(no, span) for no, line in prose for span in INLINE.findall(line)]
        texts += [(no, target) for no, line in prose for target in LINK.findall(line)]
        for no, text in texts:
            for path, test_name in REPO_PATH.findall(text):
                path = path.rstrip(".")
                if "..." in path or path.startswith(GENERATED):
                    continue
                cases.append(pytest.param(path, test_name, id=f"{doc.name}:{no}:{path}"))
    return cases


@pytest.mark.parametrize(("path", "test_name"), _mentioned_paths())
def test_every_repo_path_in_the_docs_exists(path, test_name):
    found = sorted(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
    assert found, f"{path} does not exist in the checkout"
    if test_name:
        assert re.search(rf"def {test_name}\b", found[0].read_text(encoding="utf-8")), f"{path} has no {test_name}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[|\]|\([^)]*\)", lambda m: m.group(0)[1:-1] if m.group(0).startswith("(") else "", heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    _, prose = _doc_parts(doc)
    return {_anchor(line.lstrip("#")) for _, line in prose if re.match(r"#{1,6} ", line)}


def _links() -> list:
    cases = []
    for doc in DOCS:
        _, prose = _doc_parts(doc)
        for no, line in prose:
            for target in LINK.findall(line):
                if re.match(r"\w+://|mailto:", target):
                    continue
                cases.append(pytest.param(doc, target, id=f"{doc.name}:{no}:{target}"))
    return cases


@pytest.mark.parametrize(("doc", "target"), _links())
def test_every_link_between_docs_lands(doc, target):
    file_part, _, anchor = target.partition("#")
    dest = (doc.parent / file_part).resolve() if file_part else doc
    assert dest.exists(), f"{doc.name}: link to missing {file_part}"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{doc.name}: no heading #{anchor} in {dest.name}"


def _dotted_names() -> list:
    names = set()
    for doc in DOCS:
        _, prose = _doc_parts(doc)
        for no, line in prose:
            for span in INLINE.findall(line):
                span = span.removesuffix("()")
                if DOTTED.match(span):
                    names.add((span, f"{doc.name}:{no}"))
    return [pytest.param(name, id=where) for name, where in sorted(names)]


@pytest.mark.parametrize("name", _dotted_names())
def test_every_vmunet_dotted_name_in_the_docs_exists(name):
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            assert hasattr(obj, attr), f"{name}: {'.'.join(parts[:cut])} has no {attr}"
            obj = getattr(obj, attr)
        return
    pytest.fail(f"{name}: no such module")


def _layout_files() -> list:
    """``name.py`` entries of the README's Layout block, with the package folder of their line."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    cases, folder = [], None
    for line in block.splitlines():
        head = re.match(r"^(?:vmunet/|  (\w+)/ |(\w+)/ )", line)
        if head and (head.group(1) or head.group(2)):
            folder = f"vmunet/{head.group(1)}" if head.group(1) else head.group(2)
        elif re.match(r"^  \w+\.py", line):
            folder = "vmunet"
        for name in re.findall(r"(?<![\w./*-])(\w+\.(?:py|yaml|ipynb|sh))\b", line):
            if folder is not None:
                cases.append(pytest.param(folder, name, id=f"{folder}/{name}"))
    return cases


@pytest.mark.parametrize(("folder", "name"), _layout_files())
def test_every_file_of_the_readme_layout_exists(folder, name):
    found = list((ROOT / folder).rglob(name))
    assert found, f"README Layout names {name} under {folder}/, which has no such file"


def _script_flags() -> list:
    """``--flags`` given to ``benchmarks/*.py`` scripts in the docs (code blocks and inline spans)."""
    cases = []
    for doc in DOCS:
        code, prose = _doc_parts(doc)
        texts = code + [(no, span) for no, line in prose for span in INLINE.findall(line)]
        for no, text in texts:
            for script, args in re.findall(r"(benchmarks/[\w/]+\.py)((?: +(?:\[|--?\w|\w)[^\s`|;#]*)*)", text):
                for flag in sorted(set(_flags(args))):
                    cases.append(pytest.param(script, flag, id=f"{doc.name}:{no}:{Path(script).name}{flag}"))
    return cases


@pytest.mark.parametrize(("script", "flag"), _script_flags())
def test_every_benchmark_flag_in_the_docs_is_defined_by_the_script(script, flag):
    # the scripts define their options with argparse in their own source; reading it avoids
    # importing torch in a subprocess per script
    source = (ROOT / script).read_text(encoding="utf-8")
    assert f'"{flag}"' in source or f"'{flag}'" in source, f"{script} defines no option {flag}"


def _test_names() -> list:
    """Every ``::test_name`` a doc cites, with the test file it belongs to: the path before it on
    the same line (``a.py::test_x``, ``::test_y``) or an abbreviation the doc defines
    (`` `tests/x.py` (`PR`) `` ... ``PR::test_z``)."""
    cases = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        abbrev = dict((a, p) for p, a in re.findall(r"`(tests/[\w/]+\.py)` \(`([A-Z]{2,3})`", text))
        for no, line in enumerate(text.splitlines(), start=1):
            current = None
            for path, short, name in re.findall(r"(tests/[\w/]+\.py)?(?:\b([A-Z]{2,3}))?::(test_\w+)", line):
                current = path or abbrev.get(short) or current
                assert current, f"{doc.name}:{no}: ::{name} names no test file"
                cases.append(pytest.param(current, name, id=f"{doc.name}:{no}:{name}"))
    return cases


@pytest.mark.parametrize(("path", "name"), _test_names())
def test_every_test_the_docs_cite_exists(path, name):
    source = (ROOT / path).read_text(encoding="utf-8")
    assert re.search(rf"def {name}\b", source), f"{path} has no {name}"


# where each plain subcommand is documented in full
COMMAND_DOCS = {
    ("predict",): "docs/inference.md", ("export",): "docs/export.md", ("ablate",): "docs/ablation.md",
    ("prepare", "synapse"): "docs/data.md", ("prepare", "isic"): "docs/data.md",
    ("synth", "synapse"): "docs/data.md", ("synth", "isic"): "docs/data.md", ("synth", "nifti"): "docs/data.md",
    ("info",): "docs/models.md", ("weights", "inspect"): "docs/models.md",
    ("data", "fetch-examples"): "README.md",
}


@pytest.mark.parametrize(("command", "doc"), COMMAND_DOCS.items(), ids=[" ".join(c) for c in COMMAND_DOCS])
def test_every_option_of_a_command_is_documented(command, doc):
    parsers, rest = _walk(build_parser(), list(command))
    assert not rest, f"no subcommand `vmunet {' '.join(command)}`"
    text = (ROOT / doc).read_text(encoding="utf-8")
    for action in parsers[0]._actions:
        names = [o for o in action.option_strings if o != "-h"]
        if names and "--help" not in names:
            assert any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text) for o in names), \
                f"{doc} does not mention {'/'.join(names)} of `vmunet {' '.join(command)}`"


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the first markdown table after ``heading`` (header and separator dropped)."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_the_parity_totals_count_the_parity_table():
    # the totals line is written by hand beside a table others add rows to: it went stale once
    text = (ROOT / "docs" / "reproducing.md").read_text(encoding="utf-8")
    rows = _table_rows(text, "## Parity with the original code")
    grades = {col: [row[col][0] for row in rows] for col in (2, 3)}  # "before", "now": A/B/C first
    totals = re.search(r"Totals \((\d+) claims\): before A (\d+), B (\d+), C (\d+); now A (\d+), B (\d+), C (\d+)\.",
                       text)
    assert totals, "reproducing.md: no 'Totals (N claims): before A a, B b, C c; now A a, B b, C c.' line"
    claimed = [int(n) for n in totals.groups()]
    counted = [len(rows)] + [grades[col].count(g) for col in (2, 3) for g in "ABC"]
    assert claimed == counted, f"reproducing.md totals say {claimed}, the table has {counted}"


def test_the_model_zoo_parameter_counts_are_the_models():
    import torch

    from vmunet.models import count_parameters, create_model

    rows = _table_rows((ROOT / "docs" / "models.md").read_text(encoding="utf-8"), "## Model zoo")
    checked = 0
    for row in rows:
        name, count = row[0].strip("`"), re.match(r"^([\d,]+)", row[6])
        if count is None:  # "see `vmunet info`", "tiny, ..."
            continue
        with torch.device("meta"):  # no memory, no init: shapes are all a count needs
            model = create_model(name, num_classes=1, in_chans=3)  # the column's "1 class, 3 ch"
        assert count_parameters(model) == int(count.group(1).replace(",", "")), f"models.md zoo row {name}"
        checked += 1
    assert checked >= 4
