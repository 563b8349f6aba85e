"""The root click group, and the exit-status convention every command follows. Each area adds its commands in
its own module of this package.

Why the convention lives here: ``mlguard config check`` exited 1 on an invalid config while ``mlguard serve``
exited 2 on the same file (its ConfigError reached :func:`mlguard.cli.main`, which read every ConfigError as a
usage error). A script gating a deployment on either could not tell "the file is wrong" from "the command was
called wrong". The rule, as ``mlguard audit verify`` has it: 1 when what the command was given to read or check
is bad, 2 when the command was called wrong. The root group applies it to every command: a ConfigError that
names a file (a config or policy file whose content is invalid) ends the command with :data:`EXIT_FAILED`.
"""

from __future__ import annotations

import re
from typing import Any

import click

from mlguard.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
"""What the command checked or was given to read is bad: an invalid config or policy file, a log that is not
intact, a fairness violation, a refused shred."""
EXIT_USAGE = 2
"""The command was called wrong: an unknown option, a missing file, a name that is not known (click's own)."""

EXIT_HELP = """Exit codes: 0 success; 1 a check failed (an invalid config or policy file, printed as file:field:
message, one line per error; integrity failure, fairness violation, retention refusal); 2 usage error (bad
arguments, missing file)."""

COMMAND_EXIT_HELP = """Exit codes: 0 success; 1 failed (an invalid config or policy file, printed as
file:field: message, or another error named on stderr); 2 usage error (bad arguments, missing file)."""
"""Said by the --help of a command whose own help text does not state its exit codes."""

_STATES_EXIT = re.compile(r"\bexit(?:s| codes?| statuses)?\s*:?\s*\d", re.IGNORECASE)
"""A help text that already says what the command exits with ("Exit 0 intact", "Exit codes: 0 ...", "exit 1
when ..."), so the general line is not added under it."""


class GuardCommand(click.Command):
    """A command whose --help ends with the exit codes when its own text does not give them."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if not _STATES_EXIT.search(self.help or ""):
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(COMMAND_EXIT_HELP)


class GuardGroup(click.Group):
    """A group whose commands (and subgroups, and theirs) are :class:`GuardCommand` and :class:`GuardGroup`."""

    command_class = GuardCommand
    group_class: type[click.Group | type] | None = type  # a subgroup is of this group's own class


class RootGroup(GuardGroup):
    """The ``mlguard`` group: ends a command whose config or policy file is invalid with :data:`EXIT_FAILED`."""

    group_class = GuardGroup

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a ConfigError naming a file is printed (every error, one a line) and exits 1.

        A ConfigError naming no file is about an argument (``mlguard serve``'s MODULE:APP, a policy name), not
        a file's content: it goes on to :func:`mlguard.cli.main`, which says it is a usage error (2)."""
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            if exc.file is None:
                raise
            click.echo(f"error: {exc}", err=True)
            raise click.exceptions.Exit(EXIT_FAILED) from None


@click.group(cls=RootGroup, help=f"mlguard: a compliance and privacy guard for ML endpoints.\n\n{EXIT_HELP}",
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlguard")
def cli() -> None:
    """Root of every ``mlguard`` command."""
