"""Command line of cloud-sync: the gateway's upload agent, and the reference endpoint."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from cloud_sync import __version__
from cloud_sync.endpoint_cli import COMMANDS, add_endpoint_commands, run_endpoint_command
from gatewayd.cli.parsers import add_command, command_texts

DEFAULT_CONFIG = Path("/etc/gatewayd/gatewayd.toml")


TEXTS = command_texts("cloud_sync")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloud-sync",
        description="Upload the gateway's outbox to the cloud and pull signed model bundles; "
        "or serve the reference cloud endpoint.",
    )
    parser.add_argument("--version", action="version", version=f"cloud-sync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = add_command(sub, "run", TEXTS)
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="gatewayd's TOML file (default: %(default)s)")
    configured = add_command(sub, "configured", TEXTS)
    configured.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="gatewayd's TOML file (default: %(default)s)"
    )
    add_endpoint_commands(sub, TEXTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "configured":
        return _configured(args.config)
    if args.command in COMMANDS:
        return run_endpoint_command(args)
    return _run(args)


def _configured(path: Path) -> int:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return 0  # `run` says what is wrong with the file
    if "cloud" in data:
        return 0
    print(f"{path}: no [cloud] section: cloud sync is off", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    from cloud_sync.uploader import STATE_FILE, Uploader
    from gatewayd.config import ConfigError, load_config
    from gatewayd.store.database import DB_NAME, Store

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.cloud is None:
        print(f"error: {args.config}: no [cloud] section: nothing to upload to", file=sys.stderr)
        return 2
    db = config.state_path / DB_NAME
    if not db.exists():
        print(f"error: no store at {db} (has gatewayd run with this configuration?)", file=sys.stderr)
        return 1
    cloud = config.cloud
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    store = Store(db, readonly=True)
    uploader = Uploader(
        store,
        config.state_path / STATE_FILE,
        cloud.url,
        Path(cloud.token_file).read_text().strip(),
        gateway=config.gateway.name,
        ca_file=cloud.ca_file,
        batch_records=cloud.batch_records,
        daily_budget_bytes=int(cloud.daily_budget_mb * 1e6),
        timeout_s=cloud.timeout_s,
        status_path=config.status_path,
    )
    from cloud_sync.model_pull import ModelPuller, PullError
    from gatewayd.models.bundle import load_public_key
    from gatewayd.models.install import ModelStore

    models = ModelStore(config.models_path, [load_public_key(Path(p)) for p in config.models.public_keys])
    puller = ModelPuller(
        uploader.session, cloud.url, models, max_bytes=int(cloud.max_bundle_mb * 1e6), timeout_s=cloud.timeout_s
    )

    def pull_models() -> None:
        while not stop.is_set():
            try:
                outcome = puller.poll()
                uploader.report_models(outcome.installed, outcome.rejected)
            except (PullError, OSError, ValueError) as exc:
                logging.getLogger("cloud_sync").warning("model pull: %s", exc)
            except Exception as exc:  # requests' errors and the like: try again next period
                logging.getLogger("cloud_sync").warning("model pull: %s", exc)
            stop.wait(cloud.model_poll_s)

    pulling = threading.Thread(target=pull_models, name="model-pull", daemon=True)
    pulling.start()
    try:
        uploader.run(stop.is_set, interval_s=cloud.interval_s, max_backoff_s=cloud.max_backoff_s, sleep=stop.wait)
        pulling.join(timeout=cloud.timeout_s + 1)
    finally:
        uploader.close()
        store.close()
    return 0
