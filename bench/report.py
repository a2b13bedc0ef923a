"""Reports of a benchmark runner results file: Markdown, PNG plots, and the README's table.

    python -m bench.report RESULTS.json [...]            Markdown + plots beside each file
    python -m bench.report --readme README.md RESULTS.json [...]
        rewrite the README's generated performance table (between the
        ``<!-- bench.run:begin -->`` and ``<!-- bench.run:end -->`` lines) from the files

Plots (matplotlib, Agg, no screen needed): throughput against cluster size, latency CDF per
kind and size, each node's height over the timed phase, CPU and RSS per node.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench.run:begin -->"
END = "<!-- bench.run:end -->"
UNITS = {"commit": "tx", "query1": "mode-1 queries", "query2": "mode-2 queries"}


def load(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "runs" not in doc.get("figures", {}):
        raise ValueError(f"{path}: not a bench.run results file")
    return doc


def _fmt(x: Any, digits: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def machine_line(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    line = (
        f"{m.get('cpu_model') or m.get('processor')}, {m.get('cpus')} CPUs, "
        f"{_fmt(m.get('memory_gb'), 0)} GB RAM, Python {m.get('python')}"
    )
    if m.get("ed25519_verify_us") is not None:
        line += f", one Ed25519 verification {_fmt(m['ed25519_verify_us'], 0)} us"
    return line


def network_text(params: dict[str, Any]) -> str:
    net = params.get("network") or {}
    if net.get("kind") == "loopback" or not net:
        return "loopback"
    text = f"{_fmt(net.get('latency_ms'), 0)} ms one-way"
    if net.get("jitter_ms"):
        text += f" ± {_fmt(net.get('jitter_ms'), 0)} ms"
    if net.get("loss"):
        text += f", loss {net.get('loss')}"
    return text + " (delaying proxy)"


def load_text(params: dict[str, Any]) -> str:
    if params.get("rate") is not None:
        text = f"open loop {_fmt(params['rate'], 0)}/s"
    else:
        text = f"closed loop, {params.get('concurrency')} in flight"
    if params.get("load_workload") == "commit":
        text += f", batches of {params.get('batch')}"
    if params.get("mix"):
        text += ", mix " + " / ".join(f"{k} {v:.0%}" for k, v in params["mix"].items())
    return text


def command_line(params: dict[str, Any]) -> str:
    """The bench.run command that gives these parameters."""
    parts = [
        "python -m bench.run",
        f"--nodes {','.join(map(str, params['sizes']))}",
        f"--workload {params['workload']}",
        f"--duration {params['duration_s']:g}",
    ]
    if params.get("rate") is not None:
        parts.append(f"--rate {params['rate']:g}")
    else:
        parts.append(f"--concurrency {params.get('concurrency')}")
    if params.get("load_workload") in ("commit", "mixed"):
        parts.append(f"--batch {params.get('batch')}")
    if params.get("mix"):
        parts.append("--mix " + ",".join(f"{k}={v:g}" for k, v in params["mix"].items()))
    net = params.get("network") or {}
    for key, flag in (("latency_ms", "--latency-ms"), ("jitter_ms", "--jitter-ms"),
                      ("loss", "--loss")):
        if net.get(key):
            parts.append(f"{flag} {net[key]:g}")
    return " ".join(parts)


def summary_rows(doc: dict[str, Any]) -> list[list[str]]:
    """One row per (size, kind): the figures a reader compares."""
    params = doc["figures"]["parameters"]
    rows = []
    for run in doc["figures"]["runs"]:
        if run.get("error"):
            rows.append(
                [str(run["nodes"]), "-", "failed: " + run["error"][:80], *["-"] * (len(HEADER) - 3)]
            )
            continue
        cpu = [v["cpu_pct"]["mean"] for v in run["per_node"].values() if v["cpu_pct"]["mean"]]
        rss = [v["rss_mb"]["max"] for v in run["per_node"].values() if v["rss_mb"]["max"]]
        views = sum(
            (v.get("metrics_delta") or {}).get("consensus_view_changes_total", 0)
            for v in run["per_node"].values()
        )
        for kind, k in run["by_kind"].items():
            lat = k.get("latency_ms") or {}
            rows.append(
                [
                    str(run["nodes"]),
                    UNITS.get(kind, kind),
                    f"{_fmt(k.get('per_s'), 0)}/s",
                    f"{_fmt(lat.get('p50'), 0)} / {_fmt(lat.get('p90'), 0)} / "
                    f"{_fmt(lat.get('p99'), 0)} ms",
                    f"{_fmt(k.get('failed'))} of {_fmt(k.get('sent'))}",
                    f"{_fmt(sum(cpu) / len(cpu), 0)} %" if cpu else "-",
                    f"{_fmt(max(rss), 0)} MB" if rss else "-",
                    _fmt(int(views)),
                    network_text(params),
                    speed_text(doc, run),
                    steal_text(run),
                ]
            )
    return rows


def speed_text(doc: dict[str, Any], run: dict[str, Any]) -> str:
    """The machine's speed while the run was measured: µs per Ed25519 verification, median
    (min-max) of the probes taken during it; files written before the probes existed give the
    one measurement made when the file was written."""
    probe = run.get("ed25519_verify_us") or {}
    if probe.get("p50") is not None:
        return f"{_fmt(probe['p50'], 0)} ({_fmt(probe['min'], 0)}-{_fmt(probe['max'], 0)}) µs"
    after = doc.get("machine", {}).get("ed25519_verify_us")
    return f"{_fmt(after, 0)} µs (after the run)" if after is not None else "-"


def steal_text(run: dict[str, Any]) -> str:
    """CPU time the hypervisor took from this machine during the run: the whole window's share
    and the worst second's (files written before this was sampled: "-")."""
    host = run.get("host_cpu") or {}
    if host.get("steal_pct") is None:
        return "-"
    return f"{_fmt(host['steal_pct'], 0)} % ({_fmt(host['steal_max_pct'], 0)} %)"


HEADER = [
    "nodes",
    "items",
    "committed",
    "latency p50 / p90 / p99",
    "failed",
    "CPU per node (mean)",
    "RSS per node (max)",
    "view changes (sum over nodes)",
    "network",
    "Ed25519 verify during the run",
    "host steal: run (worst second)",
]


def table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def markdown(doc: dict[str, Any], stem: str, plots: bool) -> str:
    f = doc["figures"]
    params = f["parameters"]
    v = f.get("versions", {})
    lines = [
        f"# {doc['benchmark']}",
        "",
        f"`{command_line(params)}` ({load_text(params)}), "
        f"network: {network_text(params)}; run {doc['time']}.",
        "",
        f"Machine: {machine_line(doc)}. creditnet {v.get('creditnet')} "
        f"(commit {str(v.get('git_commit'))[:12]}), py-libp2p {v.get('libp2p')}, "
        f"trio {v.get('trio')}. Every node"
        + (
            ", the load generator and the WAN proxy"
            if params["network"].get("kind") != "loopback"
            else " and the load generator"
        )
        + " share this machine; blocks are fsynced.",
        "",
        *table(summary_rows(doc)),
        "",
    ]
    for run in f["runs"]:
        if run.get("error"):
            continue
        lines += [
            f"## {run['nodes']} nodes",
            "",
            "one chain: " + ("yes, same height and app hash" if run["consistent"] else str(
                run.get("one_chain")
            )),
            "",
            *table(
                [
                    [
                        name,
                        _fmt(x["cpu_pct"]["mean"], 0),
                        _fmt(x["main_thread_cpu_pct"]["mean"], 0),
                        _fmt(x["rss_mb"]["max"], 0),
                        _fmt(x["height"]),
                        _fmt(x["mempool_max"]),
                        _fmt((x.get("metrics") or {}).get("mean_block_txs"), 1),
                    ]
                    for name, x in run["per_node"].items()
                ],
                ["node", "CPU %", "main thread %", "RSS MB", "height", "mempool max", "txs/block"],
            ),
            "",
        ]
    if plots:
        for suffix, title in PLOTS:
            lines += [f"![{title}]({stem}-{suffix}.png)", ""]
    return "\n".join(lines)


PLOTS = (
    ("throughput", "throughput against cluster size"),
    ("latency-cdf", "latency CDF"),
    ("height", "height over time"),
    ("resources", "CPU and RSS per node"),
)


def write_plots(doc: dict[str, Any], prefix: Path) -> list[Path]:
    """The four PNGs beside the results file; their paths."""
    import matplotlib  # noqa: PLC0415 - only the plotting needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    runs = [r for r in doc["figures"]["runs"] if not r.get("error")]
    if not runs:
        return []
    title = f"{doc['benchmark']} — {network_text(doc['figures']['parameters'])}"
    out = []
    kinds = sorted({k for r in runs for k in r["by_kind"]})

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind in kinds:
        xs = [r["nodes"] for r in runs if kind in r["by_kind"]]
        ys = [r["by_kind"][kind]["per_s"] or 0 for r in runs if kind in r["by_kind"]]
        ax.plot(xs, ys, marker="o", label=UNITS.get(kind, kind))
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)
    ax.set_xlabel("nodes")
    ax.set_ylabel("committed per second")
    ax.set_xticks([r["nodes"] for r in runs])
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    out.append(_save(fig, prefix, "throughput"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        for kind, k in r["by_kind"].items():
            cdf = k.get("cdf_ms") or []
            if cdf:
                qs = [*range(0, 100), 99.5, 99.9, 100][: len(cdf)]
                ax.plot(cdf, [q / 100 for q in qs], label=f"n={r['nodes']} {UNITS.get(kind, kind)}")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction answered within")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    out.append(_save(fig, prefix, "latency-cdf"))

    fig, axes = plt.subplots(len(runs), 1, figsize=(7, 2.6 * max(1, len(runs))), squeeze=False)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        tl = r.get("timeline") or []
        ts = [p["t"] for p in tl]
        for i in range(r["nodes"]):
            ax.plot(ts, [p["height"][i] for p in tl], linewidth=0.8)
        ax.set_ylabel("height")
        ax.set_title(f"{r['nodes']} nodes (one line per node)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds into the timed phase")
    fig.suptitle(title, fontsize=9)
    out.append(_save(fig, prefix, "height"))

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6))
    width = 0.8 / max(1, len(runs))
    for k, r in enumerate(runs):
        names = list(r["per_node"])
        xs = [i + k * width for i in range(len(names))]
        ax1.bar(xs, [r["per_node"][nm]["cpu_pct"]["mean"] or 0 for nm in names], width,
                label=f"n={r['nodes']}")
        ax2.bar(xs, [r["per_node"][nm]["rss_mb"]["max"] or 0 for nm in names], width,
                label=f"n={r['nodes']}")
    most = max((r["nodes"] for r in runs), default=1)
    for ax in (ax1, ax2):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(most)], [str(i) for i in range(most)])
    ax1.set_ylabel("CPU % (mean; 100 = one core)")
    ax2.set_ylabel("RSS MB (max)")
    ax2.set_xlabel("node index")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    out.append(_save(fig, prefix, "resources"))
    return out


def _save(fig: Any, prefix: Path, suffix: str) -> Path:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path = prefix.with_name(f"{prefix.name}-{suffix}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_reports(path: Path, *, plots: bool = True) -> list[Path]:
    """Markdown (and PNGs) beside the results file ``path``; the files written."""
    doc = load(path)
    prefix = path.with_suffix("")
    md = path.with_suffix(".md")
    md.write_text(markdown(doc, prefix.name, plots) + "\n", encoding="utf-8")
    written = []
    if plots:
        written += write_plots(doc, prefix)
    return [md, *written]


def readme_section(paths: Sequence[Path]) -> list[str]:
    """The README's generated table: every (size, kind) row of the given results files."""
    docs = [load(p) for p in paths]
    lines = [
        BEGIN,
        f"Generated by `python -m bench.report --readme README.md {' '.join(map(str, paths))}`."
        f" Machine: {machine_line(docs[0])}; all nodes, the load generator (and the WAN proxy) "
        "on it, blocks fsynced.",
        "",
    ]
    rows = []
    for doc, path in zip(docs, paths, strict=True):
        params = doc["figures"]["parameters"]
        for r in summary_rows(doc):
            rows.append([*r, f"{params['workload']}, {load_text(params)}", f"`{path.name}`"])
    lines += table(rows, [*HEADER, "workload", "results file"])
    lines.append(END)
    return lines


def update_readme(readme: Path, paths: Sequence[Path]) -> None:
    text = readme.read_text(encoding="utf-8").splitlines()
    try:
        a, b = text.index(BEGIN), text.index(END)
    except ValueError:
        raise ValueError(f"{readme}: no {BEGIN} ... {END} lines to replace") from None
    text[a : b + 1] = readme_section(paths)
    readme.write_text("\n".join(text) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--readme", type=Path, default=None)
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.readme is not None:
            update_readme(args.readme, args.results)
            print(f"bench.report: updated {args.readme}")
        else:
            for p in args.results:
                for w in write_reports(p, plots=not args.no_plots):
                    print(f"bench.report: wrote {w}")
    except (OSError, ValueError, KeyError) as exc:
        print(f"bench.report: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
