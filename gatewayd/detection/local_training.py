"""Training on the gateway itself (edge-first bootstrap, periodic and disposable models): in a
child process, so scikit-learn never holds up polling, signed with the gateway's own key.

    python -m gatewayd.detection.local_training WORKDIR

reads WORKDIR/job.json and WORKDIR/windows.npz, writes the signed bundle to WORKDIR/bundle.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gatewayd.detection.features import FeatureSpec
from gatewayd.models.bundle import generate_keypair, load_private_key, load_public_key, write_bundle

KEY_DIR = "keys"
PRIVATE = "local-signing.pem"
PUBLIC = "local-signing.pub"


def local_key(state_dir: Path) -> tuple[Path, Ed25519PublicKey]:
    """The gateway's own signing key (created on first use, owner-only), and its public key,
    which the gateway trusts beside the configured keys."""
    folder = state_dir / KEY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    if not (folder / PRIVATE).exists():
        generate_keypair(folder / PRIVATE, folder / PUBLIC)
    return folder / PRIVATE, load_public_key(folder / PUBLIC)


def own_public_key(state_dir: Path) -> Path | None:
    """The public half of the gateway's own signing key, if the gateway has made one and this
    user can read it; never creates it (for commands that only look at bundles)."""
    path = state_dir / KEY_DIR / PUBLIC
    try:
        return path if path.is_file() and os.access(path, os.R_OK) else None
    except OSError:  # the keys folder is its owner's only
        return None


def write_job(workdir: Path, features: np.ndarray, ends: np.ndarray, **job: object) -> None:
    np.savez(workdir / "windows.npz", features=features, ends=ends)
    (workdir / "job.json").write_text(json.dumps(job))


def main(workdir: Path) -> int:
    from gatewayd.models.training import train_bundle

    job = json.loads((workdir / "job.json").read_text())
    with np.load(workdir / "windows.npz") as data:
        features, ends = data["features"], data["ends"]
    trained = train_bundle(
        features,
        ends,
        FeatureSpec.from_dict(job["spec"]),
        name=job["name"],
        version=job["version"],
        source=job["source"],
        trees=job["trees"],
        scale_floor=job["scale_floor"],
        devices=job.get("devices"),
    )
    write_bundle(workdir / "bundle", trained.manifest, trained.files, load_private_key(Path(job["key"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
