"""Executable docs: the code blocks of README.md and docs/*.md run here, so they cannot rot.

One test per markdown file (docs/api/ holds mkdocstrings directives, not examples). A file's blocks run
in order, in a fresh temporary working directory, with one torch thread:

* ```python blocks (also ```py) run in one namespace shared by all the file's Python blocks, as a reader
  pasting them into one session would. Tracebacks point at the markdown file and line.
* ```bash blocks run when every command in them is `v2l ...` (any other needs a marker, below). They
  run in this process, with no new interpreter per command, through `transformers_v2l.cli.main` (the
  function behind the `v2l` console script), in the same working directory, so a Python block can
  make a clip that the next bash block internalizes.

The Hub is the Hub-compatible server of tests/hub_server.py on 127.0.0.1 (the `local_hub` fixture), so
`push_to_hub` and `from_pretrained` on a repo id make real round trips through `huggingface_hub`.
A repository that only exists on the real Hub (such as the SmolVLM2 weights) is not there.

Opting a block out. A block that cannot run here - it needs real SmolVLM2 weights from the Hub, a GPU,
a benchmark's data, the authors' released checkpoints, hours of CPU, or it installs packages - is
preceded by a marker that names the reason:

    <!-- docs-test: skip needs the SmolVLM2-500M weights from the Hub -->

    ```python
    ...
    ```

The marker is an HTML comment, so mkdocs renders nothing for it; only blank lines may stand between it
and its block. A marker without a reason, a marker that no block follows, an unknown `docs-test:`
directive, or a bash block with a command other than `v2l` (and no marker) fails the file's test.
Opted-out blocks are still checked for what can be checked offline: their Python must compile, and
their `v2l` commands must parse with the current command-line parser.
Where possible a skipped block is followed or preceded by an offline equivalent on the embedded
tiny-world model (`transformers_v2l.demo.load_default_hypernetwork`), which does run.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # not docs/api/*.md

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")  # httpx, on uploads

PYTHON = {"python", "py", "python3"}
BASH = {"bash", "sh", "shell"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str  # "python", "bash" or another info string's first word
    code: str
    skip: str | None = None  # the reason of a `docs-test: skip` marker

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a markdown file, with its `docs-test` marker; raises on a bad marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (line, reason) of a marker waiting for its block
    i = 0
    while i < len(lines):
        line = lines[i]
        if marker := MARKER.match(line):
            body = marker["body"].strip()
            directive, _, reason = body.partition(" ")
            if directive != "skip":
                raise ValueError(
                    f"{path.name}:{i + 1}: unknown docs-test directive {body!r}; use `skip REASON`."
                )
            if not reason.strip():
                raise ValueError(
                    f"{path.name}:{i + 1}: a docs-test skip marker must say why the block cannot run."
                )
            if pending:
                raise ValueError(f"{path.name}:{pending[0]}: docs-test marker not followed by a code block.")
            pending = (i + 1, reason.strip())
            i += 1
            continue
        opening = FENCE.match(line)
        if opening is None:
            if pending and line.strip():
                raise ValueError(f"{path.name}:{pending[0]}: docs-test marker not followed by a code block.")
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = (opening["info"].split() or [""])[0].lower()
        end = i + 1
        while end < len(lines) and not re.match(rf"^[ \t]*{fence[0]}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        body = [
            text[len(indent) :] if text.startswith(indent) else text.lstrip() for text in lines[i + 1 : end]
        ]
        blocks.append(Block(path, i + 1, language, "\n".join(body) + "\n", pending[1] if pending else None))
        pending = None
        i = end + 1
    if pending:
        raise ValueError(f"{path.name}:{pending[0]}: docs-test marker not followed by a code block.")
    return blocks


def runnable(block: Block) -> bool:
    return block.skip is None and (block.language in PYTHON or block.language in BASH)


def bash_commands(block: Block) -> list[list[str]]:
    """The words of each command of a bash block (continuation lines joined, comments dropped)."""
    lines = block.code.replace("\\\n", " ").splitlines()
    return [words for words in (shlex.split(line, comments=True) for line in lines) if words]


def v2l_commands(block: Block) -> list[list[str]]:
    """The argument lists of a bash block's `v2l` commands; raises if it runs anything else."""
    for words in bash_commands(block):
        if words[0] != "v2l":
            raise AssertionError(
                f"{block.where}: bash blocks run only `v2l` commands, not {shlex.join(words)!r}; mark the "
                "block with `<!-- docs-test: skip REASON -->` if it cannot run offline."
            )
    return [words[1:] for words in bash_commands(block)]


def run_python(block: Block, namespace: dict) -> None:
    # Pad with the lines before the block, so tracebacks show the markdown file's own line numbers.
    code = "\n" * block.line + block.code
    exec(compile(code, str(block.path), "exec"), namespace)


def run_bash(block: Block) -> None:
    from transformers_v2l.cli import main

    for argv in v2l_commands(block):
        try:
            status = main(argv)
        except SystemExit as exit_:  # argparse errors
            status = exit_.code
        assert status in (0, None), f"{block.where}: `v2l {shlex.join(argv)}` exited with {status}"


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(autouse=True)
def isolated_process_state():
    """One torch thread; afterwards, undo what in-process `v2l` commands change for the rest of the session."""
    from transformers.utils import logging as hf_logging

    threads, grad, env = torch.get_num_threads(), torch.is_grad_enabled(), dict(os.environ)
    progress_bars = hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_grad_enabled(grad)
    if progress_bars:  # `v2l demo` turns transformers' progress bars off
        hf_logging.enable_progress_bar()
    os.environ.clear()
    os.environ.update(env)


def test_the_docs_are_collected():
    names = [_doc_id(path) for path in DOC_FILES]
    assert "README.md" in names and "docs/quickstart.md" in names
    assert not any(name.startswith("docs/api/") for name in names)


@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_markers_are_well_formed_and_opted_out_blocks_still_parse(path):
    from transformers_v2l.cli import build_parser

    for block in parse_blocks(path):  # raises on a malformed marker
        if block.language in PYTHON:
            compile("\n" * block.line + block.code, str(block.path), "exec")
        elif block.language in BASH and block.skip is None:
            v2l_commands(block)  # raises for a bash block that needs a marker
        elif block.language in BASH:
            for words in bash_commands(block):
                if words[0] == "v2l":
                    try:
                        build_parser().parse_args(words[1:])
                    except SystemExit:
                        pytest.fail(f"{block.where}: `{shlex.join(words)}` does not parse (see stderr)")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_doc_code_blocks_run(path, tmp_path, monkeypatch, local_hub):
    blocks = [block for block in parse_blocks(path) if runnable(block)]
    if not blocks:
        skipped = [f"{b.where}: {b.skip}" for b in parse_blocks(path) if b.skip]
        pytest.skip("no runnable code block" + (f" (opted out: {'; '.join(skipped)})" if skipped else ""))
    workdir = tmp_path / "work"  # tmp_path also holds the local Hub's cache (hf_home/)
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        print(f"--- {block.where} ({block.language})")
        if block.language in PYTHON:
            run_python(block, namespace)
        else:
            run_bash(block)
