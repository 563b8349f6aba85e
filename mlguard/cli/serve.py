"""``mlguard serve CONFIG MODULE:APP``: run an existing ASGI app under uvicorn, guarded, with no code change."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import click

from mlguard.cli._root import EXIT_FAILED, cli


@cli.command(help="Serve MODULE:APP wrapped by the guard described in CONFIG (mlguard.yaml), under uvicorn.\n\n"
                  "Exit codes: 1 a configuration error, with the same message as `mlguard config check` (CONFIG is "
                  "checked as by `config check` before any worker starts, every error named by file and field; "
                  "with --workers N a worker that cannot build its guard stops the server the same way); 2 a "
                  "usage error (a bad option, MODULE:APP not importable); 3 the server could not start (uvicorn's "
                  "start-up failure, e.g. the port is in use).")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("app")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to bind.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes; each builds its own guard. With more than one, {prefix}/metrics merges "
                   "every worker's metrics (see admin.metrics_dir).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help="uvicorn's log level (mlguard's own is log_level in CONFIG).")
@click.option("--log-format", default="json", show_default=True, type=click.Choice(["json", "text"]),
              help="json: one JSON object per line (ts, level, logger, message, value-free fields); text: the "
                   "same fields on one readable line. Both never print input values, query strings or client "
                   "addresses.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One line per request (method, path without its query string, status).")
@click.option("--root-path", default="", help="The prefix a reverse proxy serves the app under and strips "
                                             "(uvicorn's --root-path); routes in CONFIG stay the app's own paths.")
@click.option("--proxy-headers/--no-proxy-headers", default=True, show_default=True,
              help="Trust X-Forwarded-Proto/For from --forwarded-allow-ips (uvicorn's).")
@click.option("--forwarded-allow-ips", default=None,
              help="Addresses whose forwarded headers are trusted (uvicorn's; default 127.0.0.1 or env "
                   "FORWARDED_ALLOW_IPS).")
def serve(config: Path, app: str, host: str, port: int, workers: int, log_level: str, log_format: str,
          access_log: bool, root_path: str, proxy_headers: bool, forwarded_allow_ips: str | None) -> None:
    import uvicorn

    from mlguard.config import load_config
    from mlguard.logs import LogFormat, configure_logging, uvicorn_log_config
    from mlguard.metrics_spool import ENV_DIR
    from mlguard.runtime import check_config
    from mlguard.serving import ENV_APP, ENV_CONFIG, ENV_FATAL, import_app

    fmt: LogFormat = "json" if log_format == "json" else "text"
    # what is logged before uvicorn takes over (config load, app import); replaces the CLI's text handler
    configure_logging(fmt, "WARNING", logger="mlguard")

    # Fail fast, with file and field, before any worker starts (exit 1): the checks of `mlguard config check`.
    # A worker that fails to build its guard is not stopped by uvicorn, which starts it again and again.
    cfg = check_config(load_config(config), file=config, files=True).config
    import_app(app)
    os.environ[ENV_CONFIG] = str(config.resolve())
    os.environ[ENV_APP] = app
    # Several workers answer {prefix}/metrics together through a spool directory (mlguard/metrics_spool.py):
    # without one configured, a fresh directory for this run, removed when the server stops.
    spool: str | None = None
    if workers > 1 and cfg.admin.enabled and not cfg.admin.metrics_dir and not os.environ.get(ENV_DIR):
        spool = os.environ[ENV_DIR] = tempfile.mkdtemp(prefix="mlguard-metrics-")
    # A worker that cannot build its guard for a lasting reason stops the server (mlguard/serving.py:
    # stop_supervisor) instead of being restarted for ever; its error is read back from this directory.
    fatal_dir = tempfile.mkdtemp(prefix="mlguard-serve-") if workers > 1 else None
    if fatal_dir is not None:
        os.environ[ENV_FATAL] = os.path.join(fatal_dir, "fatal")
    try:
        uvicorn.run("mlguard.serving:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, log_config=uvicorn_log_config(fmt, log_level), access_log=access_log,
                    root_path=root_path, proxy_headers=proxy_headers, forwarded_allow_ips=forwarded_allow_ips)
        fatal = Path(fatal_dir, "fatal") if fatal_dir is not None else None
        if fatal is not None and fatal.exists():
            message = fatal.read_text(encoding="utf-8")
            # once in the --log-format (a JSON log pipeline keeps only JSON lines, and the lines before this one,
            # uvicorn's "Received SIGTERM", read as if something outside had stopped the server), once for a person
            logging.getLogger("mlguard.serve").error("a worker could not build its guard, so the server stopped: %s",
                                                     message)
            click.echo(f"error: a worker could not start: {message}", err=True)
            raise click.exceptions.Exit(EXIT_FAILED)
    finally:
        if spool is not None:
            os.environ.pop(ENV_DIR, None)
            shutil.rmtree(spool, ignore_errors=True)
        if fatal_dir is not None:
            os.environ.pop(ENV_FATAL, None)
            shutil.rmtree(fatal_dir, ignore_errors=True)
