"""`taskstack keys`: the auth service's signing keys, and the rotation drill."""

import argparse
import json
import os
from pathlib import Path
from typing import Any

from taskstack.auth.keys import (
    KeyConfigurationError,
    SigningKeys,
    generate_signing_key,
    load_signing_keys,
)
from taskstack.dev.errors import CliError

ROTATION_DRILL = """\
zero-downtime rotation (keys are files <kid>.pem in AUTH_SIGNING_KEYS_DIR):
  1. taskstack keys generate --dir DIR     add a key; roll it out: auth publishes it
                                          in its JWKS, the old key still signs
  2. wait for the JWKS cache (AUTH_JWKS_MAX_AGE_SECONDS, and the tasks service's
     JWKS_CACHE_SECONDS), then set AUTH_SIGNING_KEY_ID=<new kid> and roll out
  3. after the longest access-token lifetime (AUTH_ACCESS_TOKEN_SECONDS) plus the
     leeway, delete the old <kid>.pem and roll out: its tokens stop verifying"""


def default_keys_dir() -> Path:
    return Path(os.environ.get("AUTH_SIGNING_KEYS_DIR", ".taskstack/keys"))


def add_keys_commands(commands: "argparse._SubParsersAction[Any]") -> None:
    keys = commands.add_parser(
        "keys",
        help="generate and inspect the auth service's signing keys",
        description="Signing keys are EC P-256 private keys, one file <kid>.pem each.",
        epilog=ROTATION_DRILL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = keys.add_subparsers(required=True, metavar="action", parser_class=type(keys))
    directory = argparse.ArgumentParser(add_help=False)
    directory.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="the keys directory (default $AUTH_SIGNING_KEYS_DIR or .taskstack/keys)",
    )
    generate = actions.add_parser("generate", parents=[directory], help="add a new signing key")
    generate.add_argument(
        "--development",
        action="store_true",
        help="mark the key as a development key (a production service refuses it)",
    )
    generate.set_defaults(run=_generate)
    listing = actions.add_parser("list", parents=[directory], help="list the keys and which signs")
    listing.add_argument(
        "--signing-kid",
        default=os.environ.get("AUTH_SIGNING_KEY_ID"),
        help="the key that signs, to mark it (default $AUTH_SIGNING_KEY_ID)",
    )
    listing.set_defaults(run=_list)
    jwks = actions.add_parser("jwks", parents=[directory], help="print the public JWKS")
    jwks.set_defaults(run=_jwks)
    chart = actions.add_parser(
        "chart-values",
        parents=[directory],
        help="write the keys as the chart's auth.signingKeys values (tilt up)",
        description="Write the keys in the directory as a Helm values file for the chart's "
        "auth.signingKeys, generating a development key first when there is none: `tilt up` "
        "gets a key of this machine's own, never one from the repository.",
    )
    chart.add_argument("--output", type=Path, required=True, help="the values file to write")
    chart.add_argument(
        "--signing-kid",
        default=None,
        help="the key that signs (default: the only key in the directory)",
    )
    chart.set_defaults(run=_chart_values)


def _generate(args: argparse.Namespace) -> None:
    directory = args.dir or default_keys_dir()
    try:
        kid = generate_signing_key(directory, development=args.development)
    except OSError as exc:
        raise CliError(f"cannot write a key in {directory}: {exc.strerror}") from None
    print(kid)


def _load(directory: Path, signing_kid: str | None) -> SigningKeys:
    # Which key signs matters only to the service; here any loaded key will do.
    kid = signing_kid or min((path.stem for path in directory.glob("*.pem")), default=None)
    try:
        return load_signing_keys(directory, kid, production=False)
    except KeyConfigurationError as exc:
        raise CliError(str(exc)) from None


def _list(args: argparse.Namespace) -> None:
    keys = _load(args.dir or default_keys_dir(), args.signing_kid)
    for kid in sorted(keys.keys):
        print(f"{kid}  (signs)" if kid == args.signing_kid else kid)


def _jwks(args: argparse.Namespace) -> None:
    print(json.dumps(_load(args.dir or default_keys_dir(), None).jwks(), indent=2))


def _chart_values(args: argparse.Namespace) -> None:
    directory = args.dir or default_keys_dir()
    try:
        if not any(directory.glob("*.pem")):
            generate_signing_key(directory, development=True)
        keys = load_signing_keys(directory, args.signing_kid, production=False)
    except KeyConfigurationError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write a key in {directory}: {exc.strerror}") from None
    pems = {kid: (directory / f"{kid}.pem").read_text() for kid in sorted(keys.keys)}
    # JSON is YAML, which Helm reads as a values file.
    values = {"auth": {"signingKeys": {"keyId": keys.signing_kid, "keys": pems}}}
    text = json.dumps(values, indent=2) + "\n"
    output: Path = args.output
    # Written only when it changes: Tilt watches the file and would redeploy for nothing.
    if not output.exists() or output.read_text() != text:
        output.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
    print(keys.signing_kid)
