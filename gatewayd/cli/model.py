"""`gatewayd model ...`: train, sign, inspect, install and roll back model bundles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gatewayd.cli.parsers import add_command, add_config_option, command_texts
from gatewayd.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from gatewayd.models.scaling import SCALE_FLOOR

EXIT_BAD_INPUT = 2
EXIT_REJECTED = 1


TEXTS = command_texts("gatewayd.cli")


def add_parser(sub: argparse._SubParsersAction) -> None:
    model = add_command(sub, "model", TEXTS)
    msub = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")

    keygen = add_command(msub, "model keygen", TEXTS)
    keygen.add_argument("--private", type=Path, required=True, help="private key file to create")
    keygen.add_argument("--public", type=Path, required=True, help="public key file to write")

    train = add_command(msub, "model train", TEXTS)
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", type=Path, help="time in the first column, one column per channel")
    source.add_argument("--device", help="a device in the store of --config")
    train.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="with --device (default: %(default)s)")
    train.add_argument("--from", dest="start", default="0", help="with --device: start, ISO 8601 or ms")
    train.add_argument("--to", dest="end", default=str(2**62), help="with --device: end, exclusive")
    train.add_argument("--channels", help="comma-separated channels (default: all)")
    train.add_argument("--name", required=True, help="bundle name, e.g. the device or segment")
    train.add_argument("--version", type=int, required=True, help="integer version, above the installed one")
    train.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM) to sign with")
    train.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    train.add_argument("--window-s", type=float, default=10.0, help="window length (default: %(default)s)")
    train.add_argument("--hop-s", type=float, default=5.0, help="window hop (default: %(default)s)")
    train.add_argument("--trees", type=int, default=100, help="isolation trees (default: %(default)s)")
    train.add_argument(
        "--scale-floor",
        type=float,
        default=SCALE_FLOOR,
        help="a feature's spread is at least this share of its level (default: %(default)s)",
    )
    train.add_argument("--expires", help="ISO 8601 time after which the bundle is refused")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")

    sign = add_command(msub, "model sign", TEXTS)
    sign.add_argument("bundle", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")

    inspect = add_command(msub, "model inspect", TEXTS)
    inspect.add_argument("bundle", type=Path)
    inspect.add_argument("--public-key", type=Path, action="append", default=[], help="PEM file (repeatable)")
    inspect.add_argument("--config", type=Path, help="take the public keys from this configuration")

    for name in ("install", "rollback", "list"):
        p = add_command(msub, f"model {name}", TEXTS)
        if name == "install":
            p.add_argument("bundle", type=Path)
        elif name == "rollback":
            p.add_argument("name")
        add_config_option(p)


def run(args: argparse.Namespace) -> int:
    from gatewayd.models.bundle import BundleError

    try:
        return _COMMANDS[args.model_command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except OSError as exc:  # a key or bundle file given that is missing or unreadable
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _keygen(args: argparse.Namespace) -> int:
    from gatewayd.models.bundle import generate_keypair

    if args.private.exists():
        print(f"error: {args.private} exists; not overwriting a key", file=sys.stderr)
        return EXIT_BAD_INPUT
    generate_keypair(args.private, args.public)
    print(f"private key {args.private} (keep it off the gateway), public key {args.public}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from gatewayd.clock import parse_time
    from gatewayd.detection.features import FeatureSpec, sliding_windows
    from gatewayd.models.bundle import load_private_key, write_bundle
    from gatewayd.models.training import TrainingError, train_bundle
    from gatewayd.store import series

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if args.out.exists():
        print(f"error: {args.out} exists", file=sys.stderr)
        return EXIT_BAD_INPUT
    key = load_private_key(args.key)  # before the long work: a bad key fails at once
    channels = [c.strip() for c in args.channels.split(",")] if args.channels else None
    try:
        if args.csv is not None:
            ts, values, names = series.read_csv(args.csv, channels)
            source = f"csv:{args.csv.name}"
        else:
            from gatewayd.cli.state_access import open_store

            store = open_store(load_config(args.config), readonly=True)
            try:
                ts, values, names = series.from_store(
                    store, args.device, channels, parse_time(args.start), parse_time(args.end)
                )
            finally:
                store.close()
            source = f"store:{args.device}"
        progress(f"{len(ts)} samples of {len(names)} channels ({', '.join(names)})")
        spec = FeatureSpec(
            tuple(names),
            window_s=args.window_s,
            hop_s=args.hop_s,
            sample_period_s=min(series.sample_period_s(ts), args.window_s),
        )
        ends, features = sliding_windows(spec, ts, values)
        trained = train_bundle(
            features,
            ends,
            spec,
            name=args.name,
            version=args.version,
            source=source,
            trees=args.trees,
            scale_floor=args.scale_floor,
            seed=args.seed,
            expires=args.expires,
            progress=progress,
        )
    except (series.SeriesError, TrainingError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    write_bundle(args.out, trained.manifest, trained.files, key)
    sizes = ", ".join(f"{n} {len(b) / 1024:.0f} KiB" for n, b in trained.files.items())
    print(f"{args.out}: {args.name} v{args.version} signed ({sizes})")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from gatewayd.models.bundle import MANIFEST, load_private_key, sign

    if not (args.bundle / MANIFEST).is_file():
        print(f"error: {args.bundle}: no {MANIFEST}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sign(args.bundle, load_private_key(args.key))
    print(f"{args.bundle}: signed")
    return 0


def _public_keys(paths: list[Path]) -> list:
    from gatewayd.models.bundle import load_public_key

    return [load_public_key(Path(p)) for p in paths]


def _trusted_key_files(config: Config) -> dict[Path, str]:
    """The key files the daemon verifies bundles with, each with what it is: the configured
    public keys and the gateway's own key, which signs the bundles it trains itself."""
    from gatewayd.detection.local_training import own_public_key

    files = {Path(p): f"configured public key {p}" for p in config.models.public_keys}
    own = own_public_key(config.state_path)
    if own is not None:
        files[own] = f"the gateway's own key {own}"
    return files


def _inspect(args: argparse.Namespace) -> int:
    import json

    from gatewayd.models.bundle import MANIFEST, SIGNATURE, BundleError, signer, verify
    from gatewayd.models.graph import operators_of

    named = {Path(p): f"public key {p}" for p in args.public_key}
    if args.config is not None:
        named.update(_trusted_key_files(load_config(args.config)))
    try:
        manifest = json.loads((args.bundle / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        print(f"error: {args.bundle}: cannot read {MANIFEST}: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    print(
        f"{manifest.get('name')} v{manifest.get('version')}, created {manifest.get('created')}, "
        f"expires {manifest.get('expires') or 'never'}"
    )
    features = manifest.get("features", {})
    print(
        f"features: {len(features.get('names', []))} over channels {', '.join(features.get('channels', []))}, "
        f"windows of {features.get('window_s')} s every {features.get('hop_s')} s"
    )
    training = manifest.get("training", {})
    print(
        f"training: {training.get('windows')} windows from {training.get('source')}, "
        f"{training.get('start')} .. {training.get('end')}"
    )
    for kind, entry in manifest.get("models", {}).items():
        path = args.bundle / str(entry.get("file"))
        try:
            ops = ", ".join(operators_of(path.read_bytes()))
            size = f"{path.stat().st_size / 1024:.1f} KiB"
        except Exception as exc:  # a damaged file is reported, not raised: inspect is for looking at bad bundles too
            ops, size = f"unreadable ({exc.__class__.__name__})", "?"
        print(f"{kind}: {entry.get('file')} {size}, {_levels(entry)}, operators: {ops}")
    keys = _public_keys(list(named))
    try:
        verify(args.bundle, keys)
    except BundleError as exc:
        tried = "; tried: " + ", ".join(named.values()) if named else ""
        print(f"verification: FAILED: {exc}{tried}")
        return EXIT_REJECTED
    which = signer((args.bundle / SIGNATURE).read_bytes(), (args.bundle / MANIFEST).read_bytes(), keys)
    assert which is not None  # verify has just checked it
    print(f"verification: ok, signed with {list(named.values())[which]} ({len(keys)} tried)")
    return 0


def _model_store(config_path: Path, *, write: bool):
    from gatewayd.cli.state_access import check_folder
    from gatewayd.models.install import ModelStore

    config = load_config(config_path)
    check_folder(config.models_path, "the models folder", write=write)
    return ModelStore(config.models_path, _public_keys(list(_trusted_key_files(config))))


def _install(args: argparse.Namespace) -> int:
    manifest = _model_store(args.config, write=True).install(args.bundle)
    print(f"installed {manifest.name} v{manifest.version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    version = _model_store(args.config, write=True).rollback(args.name)
    print(f"{args.name}: v{version} is current again")
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _model_store(args.config, write=False)
    names = store.names()
    if not names:
        print(f"no bundles installed in {store.root}")
    for name in names:
        previous = store.linked(name, "previous")
        refused = store.rolled_back(name)
        print(
            f"{name}: current v{store.installed_version(name)}"
            + (f", previous v{previous.name}" if previous else "")
            + (f", rolled back: {', '.join(f'v{v}' for v in refused)}" if refused else "")
        )
    return 0


_COMMANDS = {
    "keygen": _keygen,
    "train": _train,
    "sign": _sign,
    "inspect": _inspect,
    "install": _install,
    "rollback": _rollback,
    "list": _list,
}


def _levels(entry: dict) -> str:
    """A model's calibration (format 2: median and tail of each score) or threshold (format 1);
    inspect also looks at damaged bundles, so nothing here assumes a well-formed manifest."""
    tails = {k: entry[k] for k in ("calibration", "t2", "q") if isinstance(entry.get(k), dict)}
    if not tails:
        return f"threshold {entry.get('threshold')}"

    def num(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, (int, float)) else repr(v)

    return "; ".join(
        f"{'' if k == 'calibration' else k + ' '}typical {num(t.get('typical'))}, level "
        f"{num(t.get('tail_start'))} + {num(t.get('tail_scale'))} x ln(0.1/alpha)"
        + (f", at least {num(t['floor'])}" if "floor" in t else "")
        for k, t in tails.items()
    )
