"""The ``mlguard`` command line: ``main(argv=None) -> int``.

Exit codes: 0 success; 1 a check failed (invalid policy or config file, integrity failure, fairness
violation, retention refusal); 2 usage error (a ConfigError that names no file lands here). 3 `serve` only: the
server could not start.
Each area adds its commands in its own module; importing them here registers them on the root group.
"""

from __future__ import annotations

import click

from mlguard.cli import audit as _audit  # noqa: F401
from mlguard.cli import config as _config  # noqa: F401  (each import registers its commands)
from mlguard.cli import demo as _demo  # noqa: F401
from mlguard.cli import explain as _explain  # noqa: F401  (registers `mlguard explain`)
from mlguard.cli import fairness as _fairness  # noqa: F401  (registers `mlguard fairness`, `report fairness`)
from mlguard.cli import keys as _keys  # noqa: F401
from mlguard.cli import policy as _policy  # noqa: F401
from mlguard.cli import redact as _redact  # noqa: F401  (registers `mlguard redact`)
from mlguard.cli import serve as _serve  # noqa: F401
from mlguard.cli._root import cli
from mlguard.errors import ConfigError, MLGuardError

__all__ = ["cli", "main"]


def _log_to_stderr() -> None:
    """Give mlguard's warnings a readable home on stderr, once, through the formatter that drops input values
    (mlguard/logs.py); ``mlguard serve`` replaces it with its ``--log-format``."""
    import logging

    from mlguard.logs import configure_logging

    if not logging.getLogger("mlguard").handlers:
        handler = configure_logging("text", logging.WARNING, logger="mlguard")
        handler.setLevel(logging.WARNING)  # a Guard built later raises the logger's level to log_level (INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting, so tests and ``python -m`` can call it."""
    _log_to_stderr()
    try:
        result = cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return 2 if isinstance(exc, click.UsageError) or exc.exit_code == 2 else int(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except MLGuardError as exc:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        return 1
    return result if isinstance(result, int) else 0
