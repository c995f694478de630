"""`--help` that reads as prose: `umt distill [OPTIONS] RECIPE [KEY=VALUE]...`, with no type tags after names.

Typer's help shows `{recipe} [[KEY=VALUE]...]...` in the usage line and `<bool>` after every flag, `<list[str]>`
after the overrides. These classes keep click's plain layout (which also stays free of escape codes in logs) and
name each argument by its metavar. Commands pass them as `cls=`; only public click/typer hooks are overridden. The
Typer apps also set `rich_markup_mode=None`, so usage errors and a bare `umt` print plain text the same way.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup

__all__ = ["Command", "Group", "CONTEXT"]

CONTEXT = {"max_content_width": 120}
"""Context settings for the root app: help may use up to 120 columns where the terminal has them."""


def _argument_name(param: Any) -> str:
    """`RECIPE`, `[ANNOTATIONS]`, `[KEY=VALUE]...`: required bare, optional in brackets, repeatable with `...`."""
    name = param.metavar or param.name.upper()
    name = name if param.required else f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


def _format_help(command: Any, ctx: Any, formatter: Any) -> None:
    # click's own layout, whatever typer would do with rich installed
    command.format_usage(ctx, formatter)
    command.format_help_text(ctx, formatter)
    command.format_options(ctx, formatter)
    command.format_epilog(ctx, formatter)


def _format_params(command: Any, ctx: Any, formatter: Any) -> None:
    arguments, options = [], []
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            arguments.append((_argument_name(param), getattr(param, "help", None) or ""))
        elif (record := param.get_help_record(ctx)) is not None:
            options.append(record)  # flags come without a type; other options show their metavar
    for title, rows in (("Arguments", arguments), ("Options", options)):
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)


class Command(TyperCommand):
    """A sub-command with plain help (see the module docstring)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_name(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _format_help(self, ctx, formatter)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_params(self, ctx, formatter)


class Group(TyperGroup):
    """A command group with plain help: its options, then its commands."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _format_help(self, ctx, formatter)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_params(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # Each command's whole first sentence, wrapped: click would cut it to the terminal width with "...".
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=300)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
