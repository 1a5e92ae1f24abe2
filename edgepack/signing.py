"""The bundle's `SHA256SUMS` file and its ed25519 signatures.

`SHA256SUMS` lists every file of a bundle (except itself and the signature files) in the
format of coreutils' `sha256sum`, paths relative to the bundle, sorted: a device checks a
bundle with `cd BUNDLE && sha256sum -c SHA256SUMS`. Writing it needs the standard library
only.

Signing (`edgepack build --sign KEY`) writes `manifest.sig` (over manifest.json's bytes) and
`SHA256SUMS.sig` (over SHA256SUMS's bytes): raw 64-byte ed25519 signatures, which
`openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in manifest.json -sigfile manifest.sig`
checks too. `check_signature` (`edgepack verify --key PUB`) refuses a bundle that is unsigned,
whose manifest or SHA256SUMS does not match its signature, or whose files do not match
SHA256SUMS. Keys are PEM (PKCS#8 / SubjectPublicKeyInfo) or 32 raw bytes; the `cryptography`
package is imported only here, and only when a key is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError, VerificationFailed
from .manifest.jsonio import sha256_file
from .safepath import relative_path_problem

SUMS = "SHA256SUMS"
SIGNATURES = ("manifest.sig", "SHA256SUMS.sig")
SIGNED = {"manifest.sig": "manifest.json", "SHA256SUMS.sig": SUMS}


def bundle_files(bundle: Path) -> list[str]:
    """Every file (and symlink) in the bundle as a relative posix path, sorted; not
    SHA256SUMS nor the signatures. Symlinked folders are not followed."""
    bundle = Path(bundle)
    skip = {SUMS, *SIGNATURES}
    found = []
    for dirpath, dirnames, filenames in os.walk(bundle, followlinks=False):
        here = Path(dirpath)
        found += [(here / n).relative_to(bundle).as_posix() for n in filenames]
        found += [(here / n).relative_to(bundle).as_posix() for n in dirnames if (here / n).is_symlink()]
    return sorted(p for p in found if p not in skip)


def _line(path: str, digest: str) -> str:
    """One `sha256sum` line (its escaping for names with a backslash or a newline)."""
    if "\\" in path or "\n" in path:
        return "\\" + digest + "  " + path.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{digest}  {path}\n"


def write_sums(bundle: Path) -> Path:
    """Write BUNDLE/SHA256SUMS for the files the bundle holds now."""
    bundle = Path(bundle)
    path = bundle / SUMS
    path.write_text("".join(_line(p, sha256_file(bundle / p)) for p in bundle_files(bundle)), encoding="utf-8")
    return path


def read_sums(path: Path) -> dict[str, str]:
    """SHA256SUMS as {relative path: sha256}; VerificationFailed naming the line when malformed."""
    sums = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VerificationFailed(f"{path}: cannot be read as a SHA256SUMS file ({exc})") from None
    for i, line in enumerate(text.splitlines(), 1):
        escaped = line.startswith("\\")
        body = line[int(escaped):]
        digest, mode, name = body[:64].lower(), body[64:66], body[66:]
        if len(digest) != 64 or set(digest) - set("0123456789abcdef") or mode not in ("  ", " *") or not name:
            raise VerificationFailed(f"{path}: line {i} is not '<sha256>  <path>'")
        if escaped:
            name = name.replace("\\n", "\n").replace("\\\\", "\\")
        why = relative_path_problem(name)
        if why:
            raise VerificationFailed(f"{path}: line {i} names {name!r}, which {why}")
        sums[name] = digest
    return sums


def sums_problems(bundle: Path, manifest_sha256: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(where, reason) for every way the bundle's SHA256SUMS is not a true list of its files:
    missing or not a plain file, malformed or naming a path outside the bundle, a listed
    file missing or with another sha256, a file the bundle holds that it does not list.
    What `sha256sum -c SHA256SUMS` on a device would find, checked without following links.

    `manifest_sha256` (path -> sha256 of the files the manifest lists): for those files
    SHA256SUMS must agree with the manifest (whether the file agrees is the manifest checks'
    finding, named there once); the others (manifest.json, the reports) are hashed."""
    manifest_sha256 = manifest_sha256 or {}
    bundle = Path(bundle)
    path = bundle / SUMS
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return [(SUMS, "is not a plain file")]
    if not path.is_file():
        return [(SUMS, "missing (every bundle edgepack writes lists its files and their sha256 there)")]
    try:
        sums = read_sums(path)
    except VerificationFailed as exc:
        return [(SUMS, str(exc).split(": ", 1)[-1])]
    problems = []
    for name, digest in sorted(sums.items()):
        f = bundle / name
        if name in manifest_sha256:
            if manifest_sha256[name] != digest:
                problems.append((SUMS, f"lists another sha256 for {name} than the manifest does"))
        elif f.is_symlink() or not f.is_file():
            problems.append((SUMS, f"lists {name}, which is not a plain file in the bundle"))
        elif sha256_file(f) != digest:
            problems.append((SUMS, f"{name}: its sha256 is not the one SHA256SUMS lists"))
    for name in bundle_files(bundle):
        if name not in sums:
            problems.append((SUMS, f"does not list {name}"))
    return problems


# ---------------------------------------------------------------------------------------
# Keys and signatures


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError("signing needs the cryptography package: pip install 'cryptography>=42'") from None
    return serialization, ed25519


def _read_key_file(path: Path, what: str) -> bytes:
    from .safepath import special_file_problem

    path = Path(path)
    why = special_file_problem(path)
    if why:
        raise ConfigError(f"{path}: {why}; expected the {what}")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def load_private_key(path: Path | str):
    """An ed25519 private key from a PEM file or 32 raw bytes; ConfigError naming the file."""
    serialization, ed25519 = _crypto()
    data = _read_key_file(Path(path), "signing key")
    try:
        if len(data) == 32:
            return ed25519.Ed25519PrivateKey.from_private_bytes(data)
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        reason = "it is encrypted (give an unencrypted key)" if "encrypted" in str(exc).lower() else \
            "expected an ed25519 private key as PEM or 32 raw bytes"
        raise ConfigError(f"{path}: not a usable signing key: {reason}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path}: a {type(key).__name__.lstrip('_')} key; expected an ed25519 private key "
                          "(edgepack keygen OUT writes one)")
    return key


def load_public_key(path: Path | str):
    """An ed25519 public key from a PEM file or 32 raw bytes; ConfigError naming the file."""
    serialization, ed25519 = _crypto()
    data = _read_key_file(Path(path), "public key")
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{path}: is a private key; give its public key (the .pub file `edgepack keygen` wrote)")
    try:
        if len(data) == 32:
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: not an ed25519 public key (expected PEM or 32 raw bytes)") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{path}: a {type(key).__name__.lstrip('_')} key; expected an ed25519 public key")
    return key


def keygen(out: Path | str) -> tuple[Path, Path]:
    """Write a new ed25519 key pair: OUT (private, PEM, mode 0600) and OUT.pub (public, PEM)."""
    serialization, ed25519 = _crypto()
    private, public = Path(out), Path(f"{out}.pub")
    for p in (private, public):
        if p.exists() or p.is_symlink():
            raise ConfigError(f"{p} already exists; keygen does not overwrite keys")
    if not private.parent.is_dir():
        raise ConfigError(f"{private.parent}: no such folder for the key")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        public.write_bytes(pub)
    except OSError as exc:
        raise ConfigError(f"{exc.filename or private}: cannot write the key ({exc.strerror or exc})") from None
    return private, public


def sign_bundle(bundle: Path | str, key) -> list[Path]:
    """SHA256SUMS (rewritten for the files the bundle holds now), then manifest.sig and
    SHA256SUMS.sig. `key`: an Ed25519PrivateKey or a key file's path."""
    bundle = Path(bundle)
    if not hasattr(key, "sign"):
        key = load_private_key(key)
    for name in (SUMS, *SIGNATURES):  # new files, never written through whatever was there
        (bundle / name).unlink(missing_ok=True)
    write_sums(bundle)
    written = []
    for sig, doc in SIGNED.items():
        (bundle / sig).write_bytes(key.sign((bundle / doc).read_bytes()))
        written.append(bundle / sig)
    return written


def remove_signatures(bundle: Path | str) -> bool:
    """Remove signature files (after the manifest changed, e.g. a merge); whether there were any."""
    found = False
    for name in SIGNATURES:
        p = Path(bundle) / name
        if p.is_file():
            p.unlink()
            found = True
    return found


def check_signature(bundle: Path | str, public_key) -> None:
    """Raise VerificationFailed naming the file unless the bundle is signed by `public_key`
    (a key or a key file's path), its SHA256SUMS lists exactly its files, and each matches."""
    from cryptography.exceptions import InvalidSignature

    bundle = Path(bundle)
    key_name = public_key if isinstance(public_key, (str, Path)) else "the given key"
    if isinstance(public_key, (str, Path)):
        public_key = load_public_key(public_key)
    for sig, doc in SIGNED.items():
        if not (bundle / doc).is_file():
            raise VerificationFailed(f"{bundle / doc}: missing; a signed bundle has {', '.join(SIGNED.values())}")
        if not (bundle / sig).is_file():
            raise VerificationFailed(f"{bundle / sig}: missing; the bundle is not signed")
        try:
            public_key.verify((bundle / sig).read_bytes(), (bundle / doc).read_bytes())
        except InvalidSignature:
            raise VerificationFailed(f"{bundle / doc}: does not match its signature {sig} with {key_name} "
                                     "(altered, or signed with another key)") from None
    sums = read_sums(bundle / SUMS)
    present = bundle_files(bundle)
    for rel in present:
        if rel not in sums:
            raise VerificationFailed(f"{bundle / rel}: not listed in the signed SHA256SUMS")
    for rel, digest in sums.items():
        p = bundle / rel
        if p.is_symlink() or not p.is_file():
            raise VerificationFailed(f"{p}: listed in the signed SHA256SUMS but "
                                     f"{'a symlink' if p.is_symlink() else 'missing'}")
        if sha256_file(p) != digest:
            raise VerificationFailed(f"{p}: sha256 differs from the signed SHA256SUMS")
