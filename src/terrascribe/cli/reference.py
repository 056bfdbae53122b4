"""Markdown reference of every command, generated from the typer app (``make docs``)."""

from __future__ import annotations

from typing import Any

import typer

# typer vendors its own click, so commands are recognised by what they have, not their class.


def _walk(command: Any, path: list[str]):
    yield path, command
    if hasattr(command, "list_commands"):
        ctx = typer.Context(command)
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, [*path, name])


def _param_row(param: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{param.name.upper()}`"
        help_text = "argument" + (" (required)" if param.required else "")
    else:
        name = ", ".join(f"`{o}`" for o in param.opts + param.secondary_opts)
        help_text = (getattr(param, "help", None) or "").replace("\n", " ").replace("|", "\\|")
        default = param.default
        shown = getattr(param, "show_default", True) is not False
        if shown and not (default is None or default is False or default in ((), [], "")):
            help_text += f" (default: `{default}`)"
    return f"| {name} | {help_text} |"


def markdown_reference(app: typer.Typer, prog: str = "terrascribe") -> str:
    """The CLI reference as Markdown: one section per command with its options."""
    root = typer.main.get_command(app)
    lines = [
        "# Command-line reference",
        "",
        "Generated from the code by `make docs` (`python -m terrascribe.cli.reference`); "
        "a test fails when this file is out of date.",
        "",
    ]
    for path, command in _walk(root, [prog]):
        if len(path) == 1:
            continue
        title = " ".join(path)
        lines += [f"## `{title}`", ""]
        doc = (command.help or "").strip().split("\n\n")[0].replace("\n", " ")
        if doc:
            lines += [doc, ""]
        params = [p for p in command.params if p.name not in ("help",)]
        if params:
            lines += ["| parameter | meaning |", "|---|---|"]
            lines += [_param_row(p) for p in params]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    from terrascribe.cli import app

    print(markdown_reference(app), end="")
