"""A Typer command group whose commands are imported only when they run (or show their help).

The group is given a table of ``"path" -> Entry("module:function", "summary")``; ``--help`` lists the
summaries without importing a command's module, so that ``radsearch --help`` stays fast whatever the
commands import. A path with a space (``"train clip"``) makes a sub-group (``train``) on the fly.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import click
import typer
from typer.core import TyperGroup


class Entry(NamedTuple):
    target: str  # "module:function": a Typer command function (options as Annotated parameters)
    summary: str  # the line `--help` lists it with


class LazyGroup(TyperGroup):
    """Commands from a table, loaded on first use. ``path`` is this group's place in the table."""

    table: Mapping[str, Entry] = {}
    groups: Mapping[str, str] = {}  # sub-group name -> its summary

    def __init__(self, *args: Any, path: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = path
        self._loaded: dict[str, click.Command] = {}

    def _children(self) -> dict[str, str]:
        """This group's command and sub-group names, in table order, with their summaries."""
        children: dict[str, str] = {}
        depth = len(self.path)
        for path, entry in self.table.items():
            words = tuple(path.split())
            if words[:depth] != self.path or len(words) <= depth:
                continue
            name = words[depth]
            if len(words) == depth + 1:
                children[name] = entry.summary
            else:
                children.setdefault(name, self.groups.get(" ".join(words[:depth + 1]), ""))
        return children

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *self._children()]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        children = self._children()
        if cmd_name not in children:
            return None
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = self._load(cmd_name, children[cmd_name])
        return self._loaded[cmd_name]

    def _load(self, name: str, summary: str) -> click.Command:
        path = (*self.path, name)
        entry = self.table.get(" ".join(path))
        if entry is None:  # a sub-group: its own commands load when they run
            return type(self)(name=name, path=path, help=summary, no_args_is_help=True,
                              rich_markup_mode=self.rich_markup_mode)
        return load_command(name, entry)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The table's summaries, so that listing the commands imports none of them."""
        rows = [*self._children().items()]
        rows += [(name, command.get_short_help_str()) for name, command in self.commands.items()]
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)  # as click lays it out
        with formatter.section("Commands"):
            # Shortened as click shortens a loaded command's help, without loading it.
            formatter.write_dl([(name, click.Command(name, help=summary).get_short_help_str(limit))
                                for name, summary in rows])


def load_command(name: str, entry: Entry) -> click.Command:
    """The click command for one table entry: its function imported and wrapped by Typer."""
    module, _, function = entry.target.partition(":")
    callback = getattr(importlib.import_module(module), function)
    single = typer.Typer(add_completion=False, rich_markup_mode=None)
    single.command(name)(callback)
    return typer.main.get_command(single)
