"""The ``creditnet`` command (also ``python -m node``).

Every subcommand prints JSON (or plain status lines) on stdout and reports a refused input as one
line on stderr with exit status 2; it never dumps a traceback for the caller's mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import protocol
from node.keyfile import KeyFileError, write_key
from node.testnet import DEFAULT_BASE_PORT, TestnetError, create_testnet
from protocol.crypto import Identity, peer_id


class UsageError(Exception):
    """A command that cannot run as asked; printed as ``creditnet: <message>``."""


def _cmd_testnet(args: argparse.Namespace) -> int:
    hosts = None if args.hosts is None else [h.strip() for h in args.hosts.split(",")]
    try:
        nodes = create_testnet(
            Path(args.dir),
            args.nodes,
            chain_id=args.chain_id,
            base_port=args.base_port,
            hosts=hosts,
            listen_host=args.listen_host,
        )
    except (TestnetError, KeyFileError) as exc:
        raise UsageError(str(exc)) from exc
    summary = {
        "dir": str(Path(args.dir).resolve()),
        "chain_id": args.chain_id,
        "nodes": [
            {
                "index": n.index,
                "home": str(n.home),
                "public_key": n.public_key.hex(),
                "peer_id": peer_id(n.public_key),
                "p2p": n.address,
                "api": n.api_url,
                "metrics": n.metrics_url,
            }
            for n in nodes
        ],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    identity = Identity.generate()
    out = Path(args.out)
    try:
        write_key(out, identity)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from exc
    print(json.dumps({"public_key": identity.public_key.hex(), "file": str(out)}))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from node.config import ConfigError
    from node.daemon import NodeError
    from node.runner import run
    from node.storage import StorageError

    try:
        run(Path(args.home))
    except (ConfigError, NodeError, StorageError, KeyFileError) as exc:
        raise UsageError(str(exc)) from exc
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from node import client

    return _client_call(lambda: client.call(args.node.rstrip("/") + "/v1/status", timeout=10))


def _cmd_devnet(args: argparse.Namespace) -> int:
    from node.devnet import devnet

    if not 1 <= args.nodes <= 64:
        raise UsageError(f"--nodes must be 1..64, got {args.nodes}")
    try:
        return devnet(Path(args.dir), args.nodes, args.records)
    except (TestnetError, KeyFileError) as exc:
        raise UsageError(str(exc)) from exc


def _cmd_records_load(args: argparse.Namespace) -> int:
    from node import client

    try:
        token = _load_token(args.token)
        data = Path(args.file).read_bytes()
    except (OSError, KeyFileError) as exc:
        raise UsageError(str(exc)) from exc
    try:
        report = client.post_records(args.node, token, data, timeout=args.timeout)
    except client.ClientError as exc:
        raise UsageError(f"{args.node}: {exc}") from exc
    print(json.dumps(report, indent=2))
    return 0 if not report.get("errors") else 1


def _cmd_records_sample(args: argparse.Namespace) -> int:
    from node.samples import sample_records

    try:
        records = sample_records(
            args.national_id, count=args.count, seed=args.seed, furnisher=args.furnisher
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    for record in records:
        print(json.dumps(record, sort_keys=True, separators=(",", ":")))
    return 0


def _client_call(fn: Any) -> int:
    """Run a client-side action; its errors become one-line CLI errors."""
    from node.client import ClientError

    try:
        out = fn()
    except (ClientError, KeyFileError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    print(json.dumps(out, indent=2))
    return 0


def _load_token(path: str) -> str:
    from node.keyfile import load_token

    return load_token(Path(path))


def _cmd_pseudonym(args: argparse.Namespace) -> int:
    from node import client

    return _client_call(
        lambda: {"pseudonym": client.subject_pseudonym(args.node, args.national_id).hex()}
    )


def _cmd_client_register(args: argparse.Namespace) -> int:
    from node import client

    def run() -> Any:
        key = client.parse_key(args.client, "--client")
        body = {"client": key.hex(), "deposit": args.deposit, "name": args.name}
        url = args.node.rstrip("/") + "/v1/clients"
        return client.call(url, body, token=_load_token(args.token))

    return _client_call(run)


def _cmd_subject_register(args: argparse.Namespace) -> int:
    from node import client

    def run() -> Any:
        key = client.parse_key(args.subject, "--subject")
        pn = client.subject_pseudonym(args.node, args.national_id)
        body = {"pseudonym": pn.hex(), "subject": key.hex()}
        url = args.node.rstrip("/") + "/v1/subjects"
        return client.call(url, body, token=_load_token(args.token))

    return _client_call(run)


def _cmd_consent(args: argparse.Namespace) -> int:
    from node import client
    from node.keyfile import load_key

    def run() -> Any:
        return client.consent(
            args.node,
            load_key(Path(args.key)),
            args.national_id,
            client.parse_key(args.client, "--client"),
            client.parse_purpose(args.purpose),
            grant=args.consent_command == "grant",
            days=getattr(args, "days", 30),
            categories=client.parse_categories(getattr(args, "categories", None)),
        )

    return _client_call(run)


def _cmd_query(args: argparse.Namespace) -> int:
    from node import client
    from node.keyfile import load_key

    def run() -> Any:
        return client.query(
            args.node,
            load_key(Path(args.key)),
            args.national_id,
            client.parse_purpose(args.purpose),
            client.parse_categories(args.categories),
        )

    return _client_call(run)


def _cmd_audit(args: argparse.Namespace) -> int:
    from node import client
    from node.keyfile import load_key

    return _client_call(lambda: client.audit(args.node, load_key(Path(args.key)), args.national_id))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="creditnet",
        description="creditnet: credit-data sharing between reporting agencies on one ledger",
    )
    parser.add_argument("--version", action="version", version=f"creditnet {protocol.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("testnet", help="create keys, configs and one genesis for a local network")
    p.add_argument("--nodes", type=int, default=4, help="number of agencies (validators)")
    p.add_argument("--dir", required=True, help="directory to create (must be new or empty)")
    p.add_argument("--chain-id", default="creditnet-local")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    p.add_argument(
        "--hosts",
        metavar="HOST,...",
        help="where the other agencies reach each node, one IP or DNS name per node, comma-"
        "separated (genesis addresses and peers; default: the listen host, 127.0.0.1 if that "
        "is 0.0.0.0)",
    )
    p.add_argument(
        "--listen-host",
        default="127.0.0.1",
        metavar="IP",
        help="the address every node binds p2p, API and metrics to (default 127.0.0.1; "
        "0.0.0.0 in containers)",
    )
    p.set_defaults(func=_cmd_testnet)

    p = sub.add_parser("run", help="run one node in the foreground until SIGINT/SIGTERM")
    p.add_argument("--home", required=True, help="the node's directory (config.toml, keys)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="print a node's status (GET /v1/status)")
    p.add_argument("--node", required=True, help="the node's API URL, http://host:port")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("devnet", help="a local consortium with sample data, until Ctrl-C")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--dir", default="devnet", help="testnet directory (created if missing)")
    p.add_argument("--records", type=int, default=40, help="sample records to commit")
    p.set_defaults(func=_cmd_devnet)

    purposes = "loan_approval, credit_card_approval, post_loan_management, guarantee_review, "
    purposes += "self_inquiry"
    p = sub.add_parser("pseudonym", help="a subject's pseudonym (the ID never leaves this machine)")
    p.add_argument("--node", required=True)
    p.add_argument("--national-id", required=True)
    p.set_defaults(func=_cmd_pseudonym)

    p = sub.add_parser("client", help="query users (lenders)")
    csub = p.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    p = csub.add_parser("register", help="register a lender's key with an opening deposit")
    p.add_argument("--node", required=True)
    p.add_argument("--token", required=True, help="the operator token file")
    p.add_argument("--client", required=True, help="the lender's public key (hex)")
    p.add_argument("--deposit", type=int, default=0, help="opening balance, minor units")
    p.add_argument("--name", default="client", help="the lender's name on the ledger")
    p.set_defaults(func=_cmd_client_register)

    p = sub.add_parser("subject", help="data subjects")
    ssub = p.add_subparsers(dest="subject_command", metavar="ACTION", required=True)
    p = ssub.add_parser("register", help="bind a subject's key to its pseudonym")
    p.add_argument("--node", required=True)
    p.add_argument("--token", required=True, help="the operator token file")
    p.add_argument("--national-id", required=True)
    p.add_argument("--subject", required=True, help="the subject's public key (hex)")
    p.set_defaults(func=_cmd_subject_register)

    p = sub.add_parser("consent", help="a subject grants or revokes consent")
    consent_sub = p.add_subparsers(dest="consent_command", metavar="ACTION", required=True)
    for action in ("grant", "revoke"):
        p = consent_sub.add_parser(action, help=f"{action} consent, signed with the subject's key")
        p.add_argument("--node", required=True)
        p.add_argument("--key", required=True, help="the subject's key file")
        p.add_argument("--national-id", required=True)
        p.add_argument("--client", required=True, help="the lender's public key (hex)")
        p.add_argument("--purpose", required=True, help=purposes)
        if action == "grant":
            p.add_argument("--days", type=int, default=30, help="valid for this many days")
            p.add_argument("--categories", help="comma-separated; default: every category")
        p.set_defaults(func=_cmd_consent)

    p = sub.add_parser("query", help="a lender asks an agency for a subject's report")
    p.add_argument("--node", required=True)
    p.add_argument("--key", required=True, help="the lender's key file")
    p.add_argument("--national-id", required=True)
    p.add_argument("--purpose", required=True, help=purposes)
    p.add_argument("--categories", help="comma-separated; default: every category")
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser("audit", help="a subject reads who queried its data")
    p.add_argument("--node", required=True)
    p.add_argument("--key", required=True, help="the subject's key file")
    p.add_argument("--national-id", required=True)
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("keygen", help="create a key for a query user or a subject")
    p.add_argument("--out", required=True, help="key file to create (mode 0600)")
    p.set_defaults(func=_cmd_keygen)

    records = sub.add_parser("records", help="credit records (standard v1, JSON lines)")
    records_sub = records.add_subparsers(dest="records_command", metavar="ACTION", required=True)
    p = records_sub.add_parser(
        "sample", help="realistic synthetic v1 records of one subject as JSON lines"
    )
    p.add_argument("--national-id", required=True, help="the subject's 18-character ID")
    p.add_argument("--count", type=int, default=5, help="how many records (default 5)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same records (default 0)")
    p.add_argument("--furnisher", default="agency-0", help="furnisher_id of the records")
    p.set_defaults(func=_cmd_records_sample)
    p = records_sub.add_parser(
        "load",
        help="load this agency's records (JSON lines) through its node; exit 1 if lines were "
        "refused",
    )
    p.add_argument("--node", required=True, help="the node's API URL, http://host:port")
    p.add_argument("--token", required=True, help="the operator token file")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the node")
    p.add_argument("file", help="records, one standard-v1 JSON object a line")
    p.set_defaults(func=_cmd_records_load)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"creditnet: {exc}", file=sys.stderr)
        return 2
    return code
