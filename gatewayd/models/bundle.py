"""Model bundles: a directory with `manifest.json`, its Ed25519 signature `manifest.sig` (the
64 raw signature bytes over the manifest file's exact bytes) and the `.tflite` files the
manifest lists with their sha256 and size. Verification is all-or-nothing and never loads a
model file before its hash is checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gatewayd.errors import GatewayError

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT = 2  # written by this version; format 1 bundles still load
MAX_MANIFEST_BYTES = 1 << 20
MAX_MODEL_BYTES = 64 << 20
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class BundleError(GatewayError):
    """A bundle that must not be installed or loaded; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1, le=MAX_MODEL_BYTES)


class Calibration(_Strict):
    """A score's distribution on the held-back calibration windows (calibration.py)."""

    typical: float
    tail_start: float
    tail_scale: float = Field(gt=0)
    windows: int = Field(ge=1)
    # The score that windows of the training stretch itself reach, out of sample (calibration.py);
    # the alarm level never goes below it. Absent in bundles made before it existed.
    floor: float | None = None


class IForestEntry(_Strict):
    file: str
    calibration: Calibration | None = None  # format 2
    threshold: float | None = None  # format 1: the score above a share of the training windows
    typical: float | None = None  # format 1: median score on the training windows
    trees: int = Field(ge=1)
    max_samples: int = Field(ge=2)
    depth: int = Field(ge=1, le=16)


class AutoencoderEntry(_Strict):
    file: str
    calibration: Calibration | None = None
    threshold: float | None = None
    typical: float | None = None
    feature_thresholds: list[float]
    layers: list[int]


class Scaler(_Strict):
    mean: list[float]
    scale: list[float]


class PcaEntry(_Strict):
    file: str
    components: int = Field(ge=1)
    t2: Calibration
    q: Calibration


class Models(_Strict):
    iforest: IForestEntry
    autoencoder: AutoencoderEntry
    pca: PcaEntry | None = None  # format 2


class Manifest(_Strict):
    format: Literal[1, 2]  # 1: thresholds at a training quantile, two models; 2: calibrated, with PCA
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    version: int = Field(ge=1)
    created: str
    expires: str | None = None
    features: dict
    scaler: Scaler
    device_scalers: dict[str, Scaler] = Field(default_factory=dict)  # global scope: each device's own
    models: Models
    training: dict
    files: dict[str, FileEntry]

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            if not _FILE_NAME.match(name) or name in (MANIFEST, SIGNATURE):
                raise ValueError(f"file name {name!r} is not a plain file name")
        return files

    def check_consistent(self) -> None:
        width = len(self.scaler.mean)
        for scaler in (self.scaler, *self.device_scalers.values()):
            if len(scaler.mean) != width or len(scaler.scale) != width or any(s <= 0 for s in scaler.scale):
                raise BundleError("manifest: every scaler needs one mean and one positive scale per feature")
        if len(self.models.autoencoder.feature_thresholds) != width:
            raise BundleError("manifest: autoencoder.feature_thresholds needs one value per feature")
        if self.format == 2 and (
            self.models.pca is None
            or self.models.iforest.calibration is None
            or self.models.autoencoder.calibration is None
        ):
            raise BundleError("manifest: format 2 needs calibration for every model and a pca model")
        if self.format == 1:
            for old in (self.models.iforest, self.models.autoencoder):
                if old.typical is None or old.threshold is None or not old.typical < old.threshold:
                    raise BundleError(f"manifest: {old.file}: the typical score must be below the threshold")
        files = [self.models.iforest.file, self.models.autoencoder.file]
        files += [self.models.pca.file] if self.models.pca is not None else []
        for file in files:
            if file not in self.files:
                raise BundleError(f"manifest: model file {file!r} is not listed under files")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- keys ------------------------------------------------------------------------------


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair: the private key (PKCS#8 PEM) readable by its owner only."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BundleError(f"{path}: a private key must be readable by its owner only (chmod 600)")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise BundleError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{path}: not an Ed25519 public key")
    return key


# -- writing and verifying ----------------------------------------------------------------


def write_bundle(folder: Path, manifest: dict, files: dict[str, bytes], key: Ed25519PrivateKey) -> Path:
    """Write model files, then the manifest with their hashes, then its signature."""
    folder.mkdir(parents=True, exist_ok=False)
    manifest = dict(manifest)
    manifest["files"] = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    Manifest.model_validate(manifest).check_consistent()
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (folder / MANIFEST).write_bytes(body)
    (folder / SIGNATURE).write_bytes(key.sign(body))
    return folder


def sign(folder: Path, key: Ed25519PrivateKey) -> None:
    """(Re-)sign a bundle's manifest as it is on disk."""
    (folder / SIGNATURE).write_bytes(key.sign((folder / MANIFEST).read_bytes()))


def signer(signature: bytes, body: bytes, public_keys: list[Ed25519PublicKey]) -> int | None:
    """The index of the key in `public_keys` that made `signature` over `body`, or None."""
    for i, key in enumerate(public_keys):
        try:
            key.verify(signature, body)
            return i
        except InvalidSignature:
            continue
    return None


def verify(
    folder: Path,
    public_keys: list[Ed25519PublicKey],
    *,
    installed_version: int | None = None,
    now: datetime | None = None,
) -> Manifest:
    """The bundle's manifest, once everything checks: signature by one of `public_keys`,
    manifest content, expiry, version above `installed_version`, every listed file present
    with its size and sha256. Raises BundleError naming the first failure."""
    folder = Path(folder)
    manifest_path, signature_path = folder / MANIFEST, folder / SIGNATURE
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: no {MANIFEST}")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path}: larger than {MAX_MANIFEST_BYTES} bytes")
    if not signature_path.is_file():
        raise BundleError(f"{folder}: no {SIGNATURE} (unsigned bundle)")
    body = manifest_path.read_bytes()
    signature = signature_path.read_bytes()
    if not public_keys:
        raise BundleError("no public key configured to verify bundles with")
    if signer(signature, body, public_keys) is None:
        raise BundleError(f"{folder}: the signature does not verify with any configured public key")
    try:
        manifest = Manifest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BundleError(f"{manifest_path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    manifest.check_consistent()
    if manifest.expires is not None:
        moment = now or datetime.now(UTC)
        if datetime.fromisoformat(manifest.expires) <= moment:
            raise BundleError(f"{manifest.name} v{manifest.version}: expired at {manifest.expires}")
    if installed_version is not None and manifest.version <= installed_version:
        raise BundleError(f"{manifest.name} v{manifest.version}: not above the installed version {installed_version}")
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{folder}: {name} is missing")
        if path.stat().st_size != entry.bytes:
            raise BundleError(f"{path}: {path.stat().st_size} bytes, the manifest says {entry.bytes}")
        if sha256_file(path) != entry.sha256:
            raise BundleError(f"{path}: sha256 does not match the manifest")
    return manifest
