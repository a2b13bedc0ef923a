"""Lookup benchmark: how fast an agency reads one subject's records from its LevelDB store, and
how many bytes a record takes there, from 10^4 to 10^7 stored records.

    python -m bench.lookup [--sizes 10000,100000,1000000] [--large] [--per-subject 5]
        [--lookups 2000] [--seed 1] [--templates 500] [--dir DIR] [--out FILE]

A query (mode 1 at the asked agency, mode 2 at every agency answering a lookup) reads a subject's
records as :func:`node.records.records_of` does: a prefix scan of the private ``records``
namespace under the subject's pseudonym (``BlockStore.private_items``), each value decoded to a
:class:`~protocol.record.StoredRecord`. This measures that read alone, at each store size.

**Data.** Records are written the way :func:`node.records.load_records` stores them: key
``record_key(pseudonym, record_ref(furnisher, record_id))``, value ``encode(StoredRecord)``, in
``BlockStore.write_private(RECORDS_NS, ...)`` batches (synced, as the node writes; of
:data:`WRITE_BATCH` records, a tenth of the most one load may hold). They are realistic,
deterministic and cheap to make: ``--templates`` subjects get sample records from
:func:`node.samples.sample_records` (turned into stored records under a fixed salt); synthetic
subject ``i`` takes the records of template ``i mod templates`` with its own pseudonym (a keyed
hash, like real pseudonyms, so keys spread over the key space the same way) and its own record
ids (the sample's ``XX-YYYY-`` prefix and the record's number, so ids keep the samples' length).
Each template is encoded once around those two fields (:class:`Template`), so a record costs a
hash and a byte join rather than a dataclass and an encode; every :data:`VERIFY_EVERY`-th record
is rebuilt through ``dataclasses.replace``, ``encode`` and ``record_ref`` and must give the same
key and bytes (the run stops otherwise). The same ``--seed`` gives the same records, byte for byte:
``data_digest`` (BLAKE2b-256 of every key and value in write order) shows it. Records are
streamed to the store one batch at a time, so memory stays flat up to 10^7 records.

**Per size** ``n`` (10^4, 10^5, 10^6 by default; ``--large`` adds 10^7), in a fresh temporary
directory under ``--dir`` (removed afterwards):

1. *load*: ``n`` records (``--per-subject`` per subject), timed; ``load_records_per_s`` is the
   wall rate, ``write_records_per_s`` the rate inside ``write_private`` alone;
2. *on disk after the load*: the LevelDB directory's bytes once the store is closed (what the
   write-ahead log still holds included), per record;
3. *lookups*: the store is reopened (LevelDB's block cache empty; the OS page cache is not
   dropped: cold-ish) and ``--lookups`` sampled subjects are read one at a time (hits), then as
   many absent pseudonyms (misses: mode-2 lookups reach agencies that do not know the subject),
   each timed in wall time (``perf_counter``) and in this thread's CPU time (``thread_time``: on
   a shared machine a wall tail far above the CPU tail is time spent descheduled). Every hit
   must return the subject's record count and the first :data:`VERIFY_LOOKUPS` exactly its
   records; every miss nothing. The reopen (which replays the write-ahead log into a table) is
   timed too;
4. *compaction*: a full ``compact_range()`` (LevelDB merges every level into the deepest one
   holding data), timed, then bytes per record again;
5. *lookups again* on the reopened compacted store (``compacted``), same sample.

Reported: p50/p90/p99/max of hits and misses in microseconds, bytes per record (encoded value,
after the load, after compaction), load rates, phase durations and memory: the most anonymous
memory seen at any write batch (bounded: records are streamed) and the peak RSS (which also
counts the table files LevelDB maps, so it grows with the store). Results go to
``bench/results/lookup.json`` through :mod:`bench.results_io` (rewritten after every size, so a
long run keeps what it measured), and a summary table is printed; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import plyvel

from bench.results_io import RESULTS_DIR, write_result
from node.records import RECORDS_NS, record_key
from node.samples import national_ids, sample_records
from node.storage import BlockStore, DataDirLock
from node.storage.blockstore import DB_DIRNAME
from node.storage.kv import BLOOM_FILTER_BITS, WRITE_BUFFER_BYTES
from protocol.codec import decode, encode
from protocol.crypto import h256
from protocol.record import REF_DOMAIN, StoredRecord, parse_record, record_ref, to_stored

CHAIN_ID = "bench-lookup"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
LARGE_SIZE = 10_000_000
DEFAULT_PER_SUBJECT = 5
DEFAULT_LOOKUPS = 2000
TEMPLATES = 500
WRITE_BATCH = 10_000
FURNISHER = "bench-lookup"
SALT = h256(b"bench-lookup salt")
RID_DIGITS = 10
"""Synthetic record ids end in the record's number on this many digits (as the samples' ids)."""
MAX_SIZE = 10**RID_DIGITS
VERIFY_EVERY = 997
"""Every this many records, the fast encoding is checked against the node's own functions."""
VERIFY_LOOKUPS = 20
"""This many timed hits per stage are compared record for record with what was stored."""
PROGRESS_SECONDS = 10.0
DISK_BYTES_PER_RECORD = 400
"""Free space a size needs, per record, before it starts (measured peak is well under this)."""


@dataclass(frozen=True)
class Template:
    """One sample record, encoded once around the two fields a synthetic copy changes.

    ``encode(replace(record, record_id=rid, pseudonym=pn))`` is ``head + rid + mid + pn + tail``
    for every ``rid`` of the form ``rid_prefix`` + :data:`RID_DIGITS` digits (same length, so the
    same msgpack string header), and ``record_ref(FURNISHER, rid)`` is ``h256(ref_head + rid)``.
    """

    record: StoredRecord
    rid_prefix: bytes
    head: bytes
    mid: bytes
    tail: bytes
    ref_head: bytes

    @classmethod
    def of(cls, record: StoredRecord) -> Template:
        """Split ``record``'s encoding at its record id and pseudonym (ValueError if it cannot)."""
        rid = record.record_id
        if len(rid) <= RID_DIGITS or not rid[-RID_DIGITS:].isdigit():
            raise ValueError(f"record id {rid!r} does not end in {RID_DIGITS} digits")
        if record.furnisher_id != FURNISHER:
            raise ValueError(f"furnisher {record.furnisher_id!r} is not {FURNISHER!r}")
        prefix = rid[:-RID_DIGITS].encode()
        marker_rid = prefix + b"7" * RID_DIGITS
        marker_pn = h256(b"bench-lookup marker")
        enc = encode(
            dataclasses.replace(record, record_id=marker_rid.decode(), pseudonym=marker_pn)
        )
        if enc.count(marker_rid) != 1 or enc.count(marker_pn) != 1:
            raise ValueError("record id or pseudonym is not found once in the encoding")
        at_rid, at_pn = enc.index(marker_rid), enc.index(marker_pn)
        if at_rid + len(marker_rid) > at_pn:
            raise ValueError("the encoding does not put the record id before the pseudonym")
        furnisher = FURNISHER.encode()
        return cls(
            record=record,
            rid_prefix=prefix,
            head=enc[:at_rid],
            mid=enc[at_rid + len(marker_rid) : at_pn],
            tail=enc[at_pn + len(marker_pn) :],
            ref_head=REF_DOMAIN
            + len(furnisher).to_bytes(2, "big")
            + furnisher
            + len(marker_rid).to_bytes(2, "big"),
        )


def templates(count: int, per_subject: int, seed: int) -> list[list[StoredRecord]]:
    """``count`` subjects' sample records (``per_subject`` each), in stored form."""
    out = []
    for nid in national_ids(seed, min(count * 2, 10_000)):
        try:
            recs = sample_records(nid, count=per_subject, seed=seed, furnisher=FURNISHER)
        except ValueError:  # under 18 on the samples' date: no credit file
            continue
        out.append([to_stored(parse_record(r), SALT) for r in recs])
        if len(out) == count:
            break
    if len(out) < count:
        raise ValueError(f"only {len(out)} adult sample subjects for {count} templates")
    return out


def subject_pseudonym(seed: int, i: int) -> bytes:
    """Pseudonym of synthetic subject ``i``: a keyed hash, as real pseudonyms are."""
    return h256(SALT + seed.to_bytes(8, "big") + i.to_bytes(8, "big"))


def absent_pseudonym(seed: int, n: int) -> bytes:
    """The ``n``-th pseudonym of a subject no store holds (for misses)."""
    return h256(b"absent" + seed.to_bytes(8, "big") + n.to_bytes(8, "big"))


@dataclass(frozen=True)
class Dataset:
    """The records of a store of ``size``: subject ``i`` has ``per_subject`` records (the last
    subject maybe fewer) copied from template subject ``i mod len(pool)``."""

    pool: tuple[tuple[Template, ...], ...]
    seed: int
    per_subject: int
    size: int

    @classmethod
    def build(
        cls, pool: Sequence[Sequence[StoredRecord]], seed: int, per_subject: int, size: int
    ) -> Dataset:
        """Compile the template records; ValueError for an impossible size or pool."""
        if not 1 <= size < MAX_SIZE:
            raise ValueError(f"size must be 1..{MAX_SIZE - 1} records")
        if not pool or any(len(recs) != per_subject for recs in pool):
            raise ValueError(f"every template subject needs exactly {per_subject} records")
        return cls(tuple(tuple(map(Template.of, recs)) for recs in pool), seed, per_subject, size)

    @property
    def subjects(self) -> int:
        return -(-self.size // self.per_subject)

    def count(self, i: int) -> int:
        """How many records subject ``i`` has."""
        return max(0, min(self.per_subject, self.size - i * self.per_subject))

    def record_id(self, i: int, j: int) -> str:
        """Id of subject ``i``'s record ``j``: its template's prefix and the record's number."""
        template = self.pool[i % len(self.pool)][j]
        return template.rid_prefix.decode() + f"{i * self.per_subject + j:0{RID_DIGITS}d}"

    def node_record(self, i: int, j: int) -> StoredRecord:
        """Subject ``i``'s record ``j`` built with the node's own type (the slow, plain way)."""
        template = self.pool[i % len(self.pool)][j].record
        pn = subject_pseudonym(self.seed, i)
        return dataclasses.replace(template, pseudonym=pn, record_id=self.record_id(i, j))

    def stored(self, i: int) -> list[StoredRecord]:
        """Subject ``i``'s records in store (key) order: what a lookup must return."""
        records = [self.node_record(i, j) for j in range(self.count(i))]
        return sorted(records, key=lambda r: record_ref(r.furnisher_id, r.record_id))

    def node_item(self, i: int, j: int) -> tuple[bytes, bytes]:
        """Key and value of one record exactly as ``node.records.load_records`` makes them."""
        rec = self.node_record(i, j)
        return record_key(rec.pseudonym, record_ref(rec.furnisher_id, rec.record_id)), encode(rec)

    def batches(self, batch_size: int = WRITE_BATCH) -> Iterator[dict[bytes, bytes]]:
        """Every record, as ``{key: value}`` batches of at least ``batch_size`` (the last maybe
        fewer), subject by subject; RuntimeError if the fast encoding drifts from the node's."""
        pool, per_subject, seed, size = self.pool, self.per_subject, self.seed, self.size
        number = b"%%0%dd" % RID_DIGITS
        batch: dict[bytes, bytes] = {}
        n = 0
        for i in range(self.subjects):
            pn = subject_pseudonym(seed, i)
            for t in pool[i % len(pool)][: min(per_subject, size - n)]:
                rid = t.rid_prefix + number % n
                key = record_key(pn, h256(t.ref_head + rid))
                value = b"".join((t.head, rid, t.mid, pn, t.tail))
                if n % VERIFY_EVERY == 0 and (key, value) != self.node_item(i, n - i * per_subject):
                    raise RuntimeError(f"record {n}: fast encoding differs from the node's")
                batch[key] = value
                n += 1
            if len(batch) >= batch_size:
                yield batch
                batch = {}
        if batch:
            yield batch


def du(path: Path) -> tuple[int, int]:
    """Bytes and number of the regular files under ``path``."""
    sizes = [p.stat().st_size for p in path.rglob("*") if p.is_file()]
    return sum(sizes), len(sizes)


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
    return [
        decode(v, StoredRecord, canonical=False) for _, v in store.private_items(RECORDS_NS, pn)
    ]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB). It counts the pages of
    table files LevelDB maps, so it grows with the store while the heap does not."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_anon_mib() -> float:
    """Resident anonymous memory (heap, memtables, caches; not mapped files) now, 0 if unknown."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("RssAnon:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def load(store: BlockStore, data: Dataset, progress: Progress = _quiet) -> dict[str, Any]:
    """Write every record of ``data`` through ``write_private``; figures of the load."""
    digest = hashlib.blake2b(digest_size=32)
    written = encoded = 0
    in_write = 0.0
    anon = rss_anon_mib()
    started = last = time.perf_counter()
    for batch in data.batches():
        for key, value in batch.items():
            digest.update(key)
            digest.update(value)
            encoded += len(value)
        t0 = time.perf_counter()
        store.write_private(RECORDS_NS, batch)  # synced, as load_records writes
        now = time.perf_counter()
        in_write += now - t0
        written += len(batch)
        anon = max(anon, rss_anon_mib())
        if now - last >= PROGRESS_SECONDS:
            last = now
            rate = written / (now - started)
            progress(
                f"loaded {written:,}/{data.size:,} ({100 * written / data.size:.0f} %), "
                f"{rate:,.0f} records/s, {now - started:.0f} s, "
                f"about {(data.size - written) / rate:.0f} s to go, anonymous memory {anon} MiB"
            )
    seconds = time.perf_counter() - started
    if written != data.size:
        raise RuntimeError(f"wrote {written} records, not {data.size}")
    return {
        "seconds": seconds,
        "encoded_bytes": encoded,
        "load_records_per_s": round(written / seconds) if seconds > 0 else None,
        "write_records_per_s": round(written / in_write) if in_write > 0 else None,
        "data_digest": digest.hexdigest(),
        "rss_anon_max_mib": anon,
    }


def lookups(store: BlockStore, data: Dataset, sample: Sequence[int]) -> tuple[dict[str, Any], int]:
    """Time a read of each sampled subject, then of as many absent ones; check what they return.

    Returns the percentiles (``hit_us``, ``miss_us``: wall time; ``hit_cpu_us``, ``miss_cpu_us``:
    this thread's CPU time, which a machine shared with other work does not inflate, so a wall
    tail far above the CPU tail is time spent descheduled or waiting) and the records read.
    """
    wall: dict[str, list[float]] = {"hit": [], "miss": []}
    cpu: dict[str, list[float]] = {"hit": [], "miss": []}
    read = 0

    def timed(kind: str, pn: bytes) -> list[StoredRecord]:
        c0, t0 = time.thread_time(), time.perf_counter()
        found = read_subject(store, pn)
        t1, c1 = time.perf_counter(), time.thread_time()
        wall[kind].append(t1 - t0)
        cpu[kind].append(c1 - c0)
        return found

    for n, i in enumerate(sample):
        found = timed("hit", subject_pseudonym(data.seed, i))
        read += len(found)
        if len(found) != data.count(i) or (n < VERIFY_LOOKUPS and found != data.stored(i)):
            raise RuntimeError(f"subject {i}: the lookup does not return its stored records")
    for n in range(len(sample)):
        if timed("miss", absent_pseudonym(data.seed, n)):
            raise RuntimeError("an absent subject has records")
    figures = {f"{k}_us": percentiles_us(v) for k, v in wall.items()}
    figures |= {f"{k}_cpu_us": percentiles_us(v) for k, v in cpu.items()}
    return figures, read


def compact(work: Path) -> float:
    """Fully compact the store in ``work`` (opened as the node opens it); seconds taken."""
    with DataDirLock(work):
        db = plyvel.DB(
            str(work / DB_DIRNAME),
            bloom_filter_bits=BLOOM_FILTER_BITS,
            write_buffer_size=WRITE_BUFFER_BYTES,
        )
        try:
            t0 = time.perf_counter()
            db.compact_range()
            return time.perf_counter() - t0
        finally:
            db.close()


def measure(
    size: int,
    per_subject: int,
    lookups_per_stage: int,
    seed: int,
    base: Path,
    pool: Sequence[Sequence[StoredRecord]],
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Load ``size`` records into a fresh store under ``base``, then time lookups, compact, and
    time them again (see the module doc); the store is removed afterwards."""
    data = Dataset.build(pool, seed, per_subject, size)
    free = shutil.disk_usage(base).free
    if free < size * DISK_BYTES_PER_RECORD:
        raise RuntimeError(
            f"{base}: {free:,} bytes free, {size:,} records need about "
            f"{size * DISK_BYTES_PER_RECORD:,}"
        )
    rng = random.Random(f"bench-lookup/sample|{seed}|{size}")
    sample = [rng.randrange(data.subjects) for _ in range(lookups_per_stage)]
    work = Path(tempfile.mkdtemp(prefix="creditnet-lookup-", dir=base))
    started = time.perf_counter()
    try:
        with BlockStore.open(work, CHAIN_ID) as store:
            loaded = load(store, data, progress)
        after_load = du(work / DB_DIRNAME)
        progress(f"loaded in {loaded['seconds']:.1f} s, {after_load[0]:,} bytes on disk")
        t0 = time.perf_counter()
        with BlockStore.open(work, CHAIN_ID) as store:  # replays the write-ahead log
            reopen_s = time.perf_counter() - t0
            after_load_us, read = lookups(store, data, sample)
        compact_s = compact(work)
        after_compaction = du(work / DB_DIRNAME)
        progress(f"compacted in {compact_s:.1f} s, {after_compaction[0]:,} bytes on disk")
        with BlockStore.open(work, CHAIN_ID) as store:
            compacted_us, _ = lookups(store, data, sample)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "records": size,
        "subjects": data.subjects,
        "records_per_subject": per_subject,
        "data_digest": loaded["data_digest"],
        "load_records_per_s": loaded["load_records_per_s"],
        "write_records_per_s": loaded["write_records_per_s"],
        "bytes_per_record": {
            "encoded": round(loaded["encoded_bytes"] / size, 1),
            "after_load": round(after_load[0] / size, 1),
            "after_compaction": round(after_compaction[0] / size, 1),
        },
        "leveldb_bytes": {"after_load": after_load[0], "after_compaction": after_compaction[0]},
        "leveldb_files": {"after_load": after_load[1], "after_compaction": after_compaction[1]},
        "lookups": lookups_per_stage,
        "records_per_hit": round(read / lookups_per_stage, 2),
        **after_load_us,
        "compacted": compacted_us,
        "seconds": {
            "load": round(loaded["seconds"], 2),
            "reopen": round(reopen_s, 2),
            "compact": round(compact_s, 2),
            "total": round(time.perf_counter() - started, 2),
        },
        "memory_mib": {
            "rss_anon_max_during_load": loaded["rss_anon_max_mib"],
            "rss_anon_at_end": rss_anon_mib(),
            "peak_rss": peak_rss_mib(),
        },
    }


def parse_sizes(text: str) -> list[int]:
    """``"1e4,100000"`` -> ``[10000, 100000]``; ValueError for anything not a positive count."""
    sizes = []
    for part in text.split(","):
        value = float(part.strip())
        if not (math.isfinite(value) and 1 <= value < MAX_SIZE and value == int(value)):
            raise ValueError(f"--sizes: {part!r} is not a whole number of records in 1..1e10")
        sizes.append(int(value))
    return sizes


def environment(base: Path) -> dict[str, Any]:
    """What the results depend on besides the CPU: memory, the disk, LevelDB, the load."""
    where = base.resolve()
    fs, best = "?", ""
    for line in Path("/proc/mounts").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) > 2 and where.is_relative_to(fields[1]) and len(fields[1]) >= len(best):
            best, fs = fields[1], fields[2]
    return {
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "store_dir": str(base),
        "store_filesystem": fs,
        "disk_free_bytes": shutil.disk_usage(base).free,
        "plyvel": plyvel.__version__,
        "leveldb": plyvel.__leveldb_version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def table(runs: Sequence[dict[str, Any]]) -> str:
    """The summary printed at the end: per size, a line after the load and one compacted."""
    head = (
        f"{'records':>10} {'load/s':>7} {'B/rec enc':>9} {'disk':>6} {'compact':>7} "
        f"{'store':>9} {'hit p50':>7} {'hit p99':>7} {'(cpu)':>6} "
        f"{'miss p50':>8} {'miss p99':>8} {'(cpu)':>6} {'time s':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        b = r["bytes_per_record"]
        size = (
            f"{r['records']:>10,} {r['load_records_per_s']:>7,} {b['encoded']:>9} "
            f"{b['after_load']:>6} {b['after_compaction']:>7}"
        )
        for state, f, tail in (
            ("loaded", r, f"{r['seconds']['total']:>6}"),
            ("compacted", r["compacted"], ""),
        ):
            lookup = (
                f"{state:>9} {f['hit_us']['p50']:>7} {f['hit_us']['p99']:>7} "
                f"{f['hit_cpu_us']['p99']:>6} {f['miss_us']['p50']:>8} {f['miss_us']['p99']:>8} "
                f"{f['miss_cpu_us']['p99']:>6}"
            )
            lines.append(f"{size} {lookup} {tail}".rstrip())
            size = " " * len(size)
    lines.append(
        "(bytes per record: encoded value, on disk after the load, after compaction; lookups in "
        "us, wall time, with the p99 of CPU time)"
    )
    return "\n".join(lines)


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so the temporary store is removed


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked; ``sizes`` a list of counts (``--large`` appended), ``dir`` set."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.lookup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="records stored, per run"
    )
    parser.add_argument("--large", action="store_true", help=f"add {LARGE_SIZE:,} records")
    parser.add_argument("--per-subject", type=int, default=DEFAULT_PER_SUBJECT)
    parser.add_argument("--lookups", type=int, default=DEFAULT_LOOKUPS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--templates", type=int, default=TEMPLATES, help="sample subjects")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary stores go")
    parser.add_argument("--out", type=Path, default=None, help="results file")
    args = parser.parse_args(argv)
    try:
        args.sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    if args.large and LARGE_SIZE not in args.sizes:
        args.sizes.append(LARGE_SIZE)
    if not 1 <= args.per_subject <= 1000:
        parser.error("--per-subject must be 1..1000")
    if args.lookups < 1:
        parser.error("--lookups must be at least 1")
    if not 1 <= args.templates <= 5000:
        parser.error("--templates must be 1..5000")
    if not 0 <= args.seed < 2**63:
        parser.error("--seed must be 0..2**63-1")
    args.dir = args.dir or Path(tempfile.gettempdir())
    if not args.dir.is_dir():
        parser.error(f"--dir {args.dir}: not a directory")
    args.out = args.out or RESULTS_DIR / "lookup.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    sizes: list[int] = args.sizes
    base: Path = args.dir
    out: Path = args.out
    signal.signal(signal.SIGTERM, _stop)

    def say(text: str) -> None:
        print(f"bench.lookup: {text}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    pool = templates(args.templates, args.per_subject, args.seed)
    say(f"{len(pool)} template subjects ({time.perf_counter() - started:.1f} s)")
    figures: dict[str, Any] = {
        "parameters": {
            "sizes": sizes,
            "per_subject": args.per_subject,
            "lookups": args.lookups,
            "seed": args.seed,
            "templates": args.templates,
            "write_batch": WRITE_BATCH,
            "synced_writes": True,
            "os_page_cache_dropped": False,
        },
        "environment": environment(base),
        "complete": False,
        "runs": [],
    }
    for size in sizes:
        t0 = time.perf_counter()

        def progress(text: str, size: int = size) -> None:
            say(f"{size:,} records: {text}")

        fig = measure(size, args.per_subject, args.lookups, args.seed, base, pool, progress)
        figures["runs"].append(fig)
        figures["complete"] = len(figures["runs"]) == len(sizes)
        write_result("lookup", figures, out)
        say(
            f"{size:,} records in {time.perf_counter() - t0:.1f} s: hit p50/p99 "
            f"{fig['hit_us']['p50']}/{fig['hit_us']['p99']} us, miss p50/p99 "
            f"{fig['miss_us']['p50']}/{fig['miss_us']['p99']} us; bytes/record "
            f"{fig['bytes_per_record']['after_load']} "
            f"({fig['bytes_per_record']['after_compaction']} compacted)"
        )
    print(table(figures["runs"]))
    say(f"results in {out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
