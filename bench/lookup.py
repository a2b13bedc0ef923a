"""Lookup benchmark: how fast an agency reads one subject's records from its LevelDB store.

    python -m bench.lookup [--sizes 10000,100000,1000000] [--per-subject 5] [--lookups 2000]
        [--seed 1] [--dir DIR] [--out bench/results/lookup.json]

A query (mode 1 at the asked agency, mode 2 at every agency answering a lookup) reads a subject's
records as :func:`node.records.records_of` does: a prefix scan of the private ``records``
namespace under the subject's pseudonym (``BlockStore.private_items``), each value decoded to a
:class:`~protocol.record.StoredRecord`. This measures that read alone, at each store size.

For each size ``n`` a fresh store (``BlockStore.open`` in a temporary directory under ``--dir``)
gets ``n`` records, ``--per-subject`` per subject, written with ``BlockStore.write_private`` in
batches of :data:`WRITE_BATCH` (unsynced: a load's durability is not what is measured here).
The records are realistic and deterministic but cheap to make: :data:`TEMPLATES` subjects get
sample records from :func:`node.samples.sample_records` (turned into stored records under the
network salt); subject ``i`` takes the records of template ``i mod TEMPLATES`` with its own
pseudonym and its own record ids -- a keyed hash like the real pseudonyms, so keys spread over the
key space the same way. The store is then closed and reopened (LevelDB's block cache is empty;
the OS page cache is not), and ``--lookups`` random subjects are read, one at a time, timed with
``perf_counter``; as many random absent pseudonyms too (an agency asked about a subject it does
not know: mode-2 lookups reach every agency). Reported per size: p50/p90/p99/max of hits and
misses in microseconds, records read per hit, load time, and LevelDB directory bytes per record
(after the load, with what is still in the write-ahead log; plus the mean encoded record size
for comparison). Results go to ``bench/results/lookup.json`` through :mod:`bench.results_io`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.results_io import RESULTS_DIR, write_result
from node.records import RECORDS_NS, record_key
from node.samples import national_ids, sample_records
from node.storage import BlockStore
from node.storage.blockstore import DB_DIRNAME
from protocol.codec import decode, encode
from protocol.crypto import h256
from protocol.record import StoredRecord, parse_record, record_ref, to_stored

CHAIN_ID = "bench-lookup"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
DEFAULT_PER_SUBJECT = 5
DEFAULT_LOOKUPS = 2000
TEMPLATES = 500
WRITE_BATCH = 10_000
FURNISHER = "bench-lookup"
SALT = h256(b"bench-lookup salt")


def templates(count: int, per_subject: int, seed: int) -> list[list[StoredRecord]]:
    """``count`` subjects' sample records (``per_subject`` each), in stored form."""
    out = []
    for nid in national_ids(seed, count * 2):
        try:
            recs = sample_records(nid, count=per_subject, seed=seed, furnisher=FURNISHER)
        except ValueError:  # under 18 on the samples' date: no credit file
            continue
        out.append([to_stored(parse_record(r), SALT) for r in recs])
        if len(out) == count:
            break
    return out


def subject_pseudonym(seed: int, i: int) -> bytes:
    """Pseudonym of synthetic subject ``i``: a keyed hash, as real pseudonyms are."""
    return h256(SALT + seed.to_bytes(8, "big") + i.to_bytes(8, "big"))


def du(path: Path) -> int:
    """Bytes of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def percentiles_us(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/max in microseconds (nearest rank), None for no samples."""
    if not seconds:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[max(1, math.ceil(q * len(ordered))) - 1] * 1e6, 1)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1] * 1e6, 1)}


def read_subject(store: BlockStore, pn: bytes) -> list[StoredRecord]:
    """What ``node.records.records_of`` does, against a store."""
    return [decode(v, StoredRecord) for _, v in store.private_items(RECORDS_NS, pn)]


def measure(
    size: int, per_subject: int, lookups: int, seed: int, base: Path, pool: list[list[StoredRecord]]
) -> dict[str, Any]:
    """Load ``size`` records into a fresh store, then time random hits and misses."""
    subjects = max(1, size // per_subject)
    work = Path(tempfile.mkdtemp(prefix="creditnet-lookup-", dir=base))
    try:
        started = time.perf_counter()
        encoded_bytes = 0
        written = 0
        with BlockStore.open(work, CHAIN_ID, sync=False) as store:
            batch: dict[bytes, bytes | None] = {}
            for i in range(subjects):
                pn = subject_pseudonym(seed, i)
                for j, template in enumerate(pool[i % len(pool)]):
                    if written == size:
                        break
                    rid = f"{i:09d}{j:03d}"
                    rec = dataclasses.replace(template, pseudonym=pn, record_id=rid)
                    value = encode(rec)
                    encoded_bytes += len(value)
                    batch[record_key(pn, record_ref(FURNISHER, rid))] = value
                    written += 1
                if len(batch) >= WRITE_BATCH:
                    store.write_private(RECORDS_NS, batch, sync=False)
                    batch = {}
            if batch:
                store.write_private(RECORDS_NS, batch, sync=False)
        load_s = time.perf_counter() - started
        disk = du(work / DB_DIRNAME)
        rng = random.Random(seed * 1_000_003 + size)
        hits: list[float] = []
        misses: list[float] = []
        read = 0
        with BlockStore.open(work, CHAIN_ID, sync=False) as store:
            for _ in range(lookups):
                pn = subject_pseudonym(seed, rng.randrange(subjects))
                t0 = time.perf_counter()
                found = read_subject(store, pn)
                hits.append(time.perf_counter() - t0)
                read += len(found)
            for n in range(lookups):
                pn = h256(b"absent" + seed.to_bytes(8, "big") + n.to_bytes(8, "big"))
                t0 = time.perf_counter()
                found = read_subject(store, pn)
                misses.append(time.perf_counter() - t0)
                if found:
                    raise AssertionError("an absent subject has records")
        return {
            "records": written,
            "subjects": subjects,
            "records_per_subject": per_subject,
            "load_s": round(load_s, 2),
            "load_records_per_s": round(written / load_s) if load_s > 0 else None,
            "lookups": lookups,
            "hit_us": percentiles_us(hits),
            "miss_us": percentiles_us(misses),
            "records_per_hit": round(read / lookups, 2) if lookups else None,
            "leveldb_bytes": disk,
            "bytes_per_record": round(disk / written, 1) if written else None,
            "encoded_bytes_per_record": round(encoded_bytes / written, 1) if written else None,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse_sizes(text: str) -> list[int]:
    """``"1e4,100000"`` -> ``[10000, 100000]``; ValueError for anything not a positive count."""
    sizes = []
    for part in text.split(","):
        value = float(part.strip())
        if not (value >= 1 and value == int(value) and math.isfinite(value)):
            raise ValueError(f"--sizes: {part!r} is not a positive whole number of records")
        sizes.append(int(value))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lookup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="records stored, per run"
    )
    parser.add_argument("--per-subject", type=int, default=DEFAULT_PER_SUBJECT)
    parser.add_argument("--lookups", type=int, default=DEFAULT_LOOKUPS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary stores go")
    parser.add_argument("--out", type=Path, default=None, help="results file")
    args = parser.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    if not 1 <= args.per_subject <= 1000:
        parser.error("--per-subject must be 1..1000")
    if args.lookups < 1:
        parser.error("--lookups must be at least 1")
    base = args.dir or Path(tempfile.gettempdir())
    if not base.is_dir():
        parser.error(f"--dir {base}: not a directory")

    started = time.perf_counter()
    pool = templates(TEMPLATES, args.per_subject, args.seed)
    print(
        f"bench.lookup: {len(pool)} template subjects ({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
    runs = []
    for size in sizes:
        fig = measure(size, args.per_subject, args.lookups, args.seed, base, pool)
        print(
            f"bench.lookup: {size} records: hit p50 {fig['hit_us']['p50']} us, p99 "
            f"{fig['hit_us']['p99']} us; miss p99 {fig['miss_us']['p99']} us; "
            f"{fig['bytes_per_record']} bytes/record; load {fig['load_s']} s",
            file=sys.stderr,
            flush=True,
        )
        runs.append(fig)
    figures = {
        "parameters": {
            "sizes": sizes,
            "per_subject": args.per_subject,
            "lookups": args.lookups,
            "seed": args.seed,
            "templates": TEMPLATES,
            "write_batch": WRITE_BATCH,
        },
        "runs": runs,
    }
    path = write_result("lookup", figures, args.out or RESULTS_DIR / "lookup.json")
    print(json.dumps(figures))
    print(f"bench.lookup: results in {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
