"""MkDocs hook: replace `<!-- cli-reference -->` with the help of every `v2l` subcommand, from the parsers."""

from __future__ import annotations

import argparse

PLACEHOLDER = "<!-- cli-reference -->"


def _help(parser: argparse.ArgumentParser) -> str:
    return parser.format_help().replace("usage: ", "", 1)


def cli_reference_markdown() -> str:
    from transformers_v2l.cli import build_parser

    parser = build_parser()
    sections = ["```text", _help(parser), "```"]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in subparsers.choices.items():
        sections += [f"\n## `v2l {name}`\n", "```text", _help(subparser).rstrip(), "```"]
    return "\n".join(sections)


def on_page_markdown(markdown: str, **kwargs) -> str:
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, cli_reference_markdown())
    return markdown
