"""Command line of cloud-sync: the gateway's upload agent, and the reference endpoint."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
from pathlib import Path

from cloud_sync import __version__
from gatewayd.cli.parsers import add_command, command_texts
from gatewayd.models.scaling import SCALE_FLOOR

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
    serve = add_command(sub, "serve", TEXTS)
    serve.add_argument("--data", type=Path, required=True, help="folder for the database, tokens and bundles")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    retrain = add_command(sub, "retrain", TEXTS)
    retrain.add_argument("--data", type=Path, required=True)
    scope = retrain.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--gateway",
        action="append",
        help="a gateway's data (repeat for a segment of gateways); the bundle is published for each",
    )
    scope.add_argument("--fleet", action="store_true", help="every gateway's data; published for all")
    retrain.add_argument(
        "--device", action="append", help="only these devices (repeatable); one device: the bundle is named after it"
    )
    retrain.add_argument("--name", help="bundle name (default: the device, or 'global')")
    retrain.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM) to sign with")
    retrain.add_argument("--trees", type=int, default=100)
    retrain.add_argument(
        "--scale-floor",
        type=float,
        default=SCALE_FLOOR,
        help="a feature's spread is at least this share of its level (default: %(default)s)",
    )
    token = add_command(sub, "token", TEXTS)
    token.add_argument("gateway")
    token.add_argument("--data", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "configured":
        return _configured(args.config)
    if args.command == "token":
        from cloud_sync.server import Tokens

        args.data.mkdir(parents=True, exist_ok=True)
        try:
            print(Tokens(args.data / "tokens").issue(args.gateway))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "retrain":
        from cloud_sync.retrain import retrain
        from cloud_sync.storage import SqliteStorage
        from gatewayd.models.bundle import BundleError
        from gatewayd.models.training import TrainingError

        storage = SqliteStorage(args.data / "cloud.sqlite3")
        gateways = storage.gateways() if args.fleet else list(dict.fromkeys(args.gateway))
        name = args.name or (args.device[0] if args.device and len(args.device) == 1 else "global")
        try:
            result = retrain(
                storage,
                args.data / "bundles",
                args.key,
                name=name,
                gateways=gateways,
                devices=args.device,
                scope_folder="fleet" if args.fleet else gateways[0],
                trees=args.trees,
                scale_floor=args.scale_floor,
                progress=lambda t: print(t, file=sys.stderr),
            )
            if not args.fleet:  # a segment of gateways: the same signed bundle for each of them
                for other in gateways[1:]:
                    shutil.copytree(result.folder, args.data / "bundles" / other / name / str(result.version))
        except (ValueError, TrainingError, BundleError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            storage.close()
        print(
            f"published {result.name} v{result.version} ({result.windows} minutes) for "
            f"{'the fleet' if args.fleet else ', '.join(gateways)}"
        )
        return 0
    if args.command == "serve":
        from cloud_sync.server import open_server

        server = open_server(args.data, args.host, args.port)
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        logging.getLogger("cloud_sync").info("serving on %s:%d, data in %s", args.host, args.port, args.data)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        server.server_close()
        return 0
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
