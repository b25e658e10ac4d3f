"""`seekwire keys create | list | revoke | rotate`: API keys for operators."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import orjson

from seekwire.server.auth.keys import KeyFile
from seekwire.server.caller import Limits
from seekwire.server.config import Settings


def register(commands: Any) -> None:
    keys = commands.add_parser("keys", help="mint, list, revoke and rotate API keys")
    keys.add_argument(
        "--keys-file",
        default=os.environ.get(Settings.env_name("keys_file"), Settings.keys_file),
        help="the key store (env SEEKWIRE_KEYS_FILE)",
    )
    actions = keys.add_subparsers(dest="keys_action", required=True)
    create = actions.add_parser("create", help="mint a key; prints its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--principal", help="tenant or service the key acts for (default: name)")
    create.add_argument(
        "--scopes", default="chat", help="comma-separated: chat, admin (default chat)"
    )
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--streams", type=int, help="concurrent RPCs")
    create.add_argument("--expires-in-days", type=float)
    listing = actions.add_parser("list", help="keys and their metadata (never secrets)")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("id")
    rotate = actions.add_parser(
        "rotate", help="mint a successor; the old key expires after --grace-hours"
    )
    rotate.add_argument("id")
    rotate.add_argument("--grace-hours", type=float, default=24.0)
    keys.set_defaults(keys_command=run)


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp))


def run(args: argparse.Namespace) -> int:
    store = KeyFile(args.keys_file)
    if args.keys_action == "create":
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        expires = args.expires_in_days * 86400 if args.expires_in_days else None
        secret, record = store.create(
            args.name,
            principal=args.principal,
            scopes=scopes,
            limits=Limits(args.rpm, args.tpm, args.streams),
            expires_in=expires,
        )
        print(secret)
        print(
            f"key {record.id} for {record.principal} (scopes {','.join(record.scopes)}) in "
            f"{args.keys_file}: store the secret now, it is not shown again",
            file=sys.stderr,
        )
        return 0
    if args.keys_action == "list":
        records = list(store.records().values())
        if args.json:
            print(orjson.dumps([r.public() for r in records]).decode())
            return 0
        now = time.time()
        print(
            f"{'id':12}  {'name':16}  {'principal':16}  {'scopes':12}  {'rpm/tpm/streams':18}  {'expires':16}  state"
        )
        for r in records:
            state = "active" if r.active(now) else "revoked" if r.revoked else "expired"
            limits = f"{r.rpm or '-'}/{r.tpm or '-'}/{r.streams or '-'}"
            print(
                f"{r.id:12}  {r.name:16}  {r.principal:16}  {','.join(r.scopes):12}  {limits:18}  "
                f"{_when(r.expires):16}  {state}"
            )
        return 0
    try:
        if args.keys_action == "revoke":
            record = store.revoke(args.id)
            print(f"revoked {record.id} ({record.name})", file=sys.stderr)
            return 0
        secret, record = store.rotate(args.id, grace=args.grace_hours * 3600)
    except KeyError:
        print(f"seekwire: no active key {args.id!r} in {args.keys_file}", file=sys.stderr)
        return 4
    print(secret)
    print(
        f"key {record.id} replaces {args.id}, which stays valid for {args.grace_hours:g} hours",
        file=sys.stderr,
    )
    return 0
