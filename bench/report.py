"""The report of one `make bench`: JSON (everything), Markdown (what a reader needs) and a PNG
chart (throughput and latency percentiles over time, and the scaling runs)."""

import json
import math
from pathlib import Path
from typing import Any

from bench.sampler import BENCH_PROCESSES
from bench.stats import ratio
from bench.targets import STEAL_LIMIT

CORES_NOTE = (
    "The floor, the system (API, relay, processor, webhooks, MariaDB, RabbitMQ) and the load "
    "generator all share this machine's {cores} cores: every figure here is a share of the same "
    "CPU, so the floor is the ceiling for this box, not for the design."
)
STAGE_COLUMNS = {
    "statements": "statements",
    "selects": "SELECT",
    "writes": "INSERT/UPDATE/DELETE",
    "other": "other (COMMIT, ROLLBACK, SET…)",
    "commits": "commits",
    "rollbacks": "rollbacks",
}
STAGE_NOTE = (
    "Counted by the server per MySQL user (each service logs in as its own), from before the "
    "phase to the end of its drain, divided by the payouts created in it; the bench's own "
    "queries are not in them. Statements are every statement the server ran, COMMIT and "
    "ROLLBACK included. On MariaDB commits are derived (USER_STATISTICS' COMMIT_TRANSACTIONS "
    "also counts each InnoDB statement; see bench/stages.py) and rollbacks include a failed "
    "statement's own."
)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _number(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0%}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _verdicts(report: dict[str, Any]) -> list[str]:
    marks = {True: "✅ met", False: "❌ missed", None: "n/a"}
    return _table(
        ["target", "measured", "verdict"],
        [[v["target"], v["measured"], marks[v["met"]]] for v in report["targets"]],
    )


def _floor(report: dict[str, Any]) -> list[str]:
    floor = report["floor"]
    if not floor:
        return ["(floor not measured: --floor-duration 0)"]
    rows = [
        [
            f["name"],
            f"{_number(f['perSecond'], 0)} {f['unit']}",
            _number(f["latencyMs"]["p50"]),
            _number(f["latencyMs"]["p99"]),
            str(f["errors"]),
        ]
        for f in floor.values()
    ]
    return _table(["floor (same concurrency)", "throughput", "p50 ms", "p99 ms", "errors"], rows)


def _steal(report: dict[str, Any]) -> list[str]:
    share = report["stealShare"]
    line = (
        f"CPU steal (/proc/stat): {_percent(share)} of all CPU time over the run; per phase in "
        "the baseline's table."
    )
    if isinstance(share, float) and share > STEAL_LIMIT:
        line += (
            f" **More than {STEAL_LIMIT:.0%}: this run's absolute times are not comparable with "
            "another run's; the ratios, measured in the same run, are.**"
        )
    return [line]


def _phases(run: dict[str, Any], webhooks: bool) -> list[str]:
    header = ["phase", "load", "creates/s", "create p50/p95/p99/max ms", "created→final p50/p99 ms"]
    if webhooks:
        header += [
            "final→webhook p50/p99 ms",
            "created→webhook p50/p99 ms",
            "webhooks received / duplicates / TCP connections",
        ]
    header += ["end-to-end/s", "broker msgs/s", "drain s", "CPU steal", "errors"]
    rows = []
    for phase in run["phases"]:
        create, final = phase["createLatencyMs"], phase["createdToFinalMs"]
        row = [
            phase["name"],
            phase["load"],
            _number(phase["createsPerSecond"]),
            " / ".join(_number(create[key]) for key in ("p50", "p95", "p99", "max")),
            f"{_number(final['p50'])} / {_number(final['p99'])}",
        ]
        if webhooks:
            for key in ("finalToWebhookMs", "createdToWebhookMs"):
                row.append(f"{_number(phase[key]['p50'])} / {_number(phase[key]['p99'])}")
            traffic = phase["webhookTraffic"]
            row.append(
                f"{traffic['received']} / {traffic['duplicates']} / {traffic['connections']}"
            )
        row += [
            _number(phase["endToEndPerSecond"]),
            _number(phase["brokerMessagesPerSecond"]),
            _number(phase["drainS"]),
            _percent(phase["stealShare"]),
            str(len(phase["problems"])),
        ]
        rows.append(row)
    return _table(header, rows)


def _statement_budget(run: dict[str, Any]) -> list[str]:
    phases = [phase for phase in run["phases"] if phase["statementsPerPayout"]]
    if not phases:
        return ["(not counted: the bench did not start the services with their own users)"]
    peak = phases[0]["statementsPerPayout"]
    lines = [f"Per payout, {phases[0]['name']}:", ""]
    lines += _table(
        ["stage", *STAGE_COLUMNS.values()],
        [
            [name, *(_number(counts[key], 2) for key in STAGE_COLUMNS)]
            for name, counts in peak.items()
        ],
    )
    lines += ["", "Statements / commits per payout in every phase:", ""]
    lines += _table(
        ["phase", *peak],
        [
            [phase["name"]]
            + [
                f"{_number(counts['statements'])} / {_number(counts['commits'])}"
                for counts in phase["statementsPerPayout"].values()
            ]
            for phase in phases
        ],
    )
    return [*lines, "", STAGE_NOTE]


def _payroll(run: dict[str, Any]) -> list[str]:
    absent = [item for item in run["unmeasured"] if item["role"] == "batch"]
    if absent:
        return [f"{absent[0]['name']}: {absent[0]['reason']}."]
    batch = next((phase for phase in run["phases"] if phase["role"] == "batch"), None)
    if batch is None:
        return ["(no batch phase: --batch-payouts 0)"]
    figures, latency = batch["batch"], batch["createLatencyMs"]
    last = figures["toLastEndToEndS"]
    done = "payout.succeeded webhook received" if batch["webhooks"] else "SUCCESS recorded"
    return [
        f"{batch['load']}: {figures['created']:,} created, {len(batch['problems'])} problems.",
        "",
        f"- wall time (first request sent → last response): {_number(figures['wallS'], 2)} s; "
        f"per request p50 {_number(latency['p50'], 0)} ms, max {_number(latency['max'], 0)} ms",
        f"- time to the last payout done (first request sent → its last {done}): "
        + ("never, within --batch-timeout" if last is None else f"{_number(last, 2)} s"),
    ]


def _ratios(report: dict[str, Any]) -> list[str]:
    floor = report["floor"]
    peak = report["runs"][0]["phases"][0]
    if not floor:
        return []
    transaction, broker, http = floor["createTransaction"], floor["broker"], floor["http"]
    ours_p50, floor_p50 = peak["createLatencyMs"]["p50"], transaction["latencyMs"]["p50"]
    rows = [
        [
            "creates/s vs create-request SQL on asyncmy",
            f"{_number(peak['createsPerSecond'])} / {_number(transaction['perSecond'])}",
            _percent(ratio(peak["createsPerSecond"], transaction["perSecond"])),
        ],
        [
            "end-to-end/s vs create-request SQL on asyncmy",
            f"{_number(peak['endToEndPerSecond'])} / {_number(transaction['perSecond'])}",
            _percent(ratio(peak["endToEndPerSecond"], transaction["perSecond"])),
        ],
        [
            "creates/s vs trivial FastAPI endpoint",
            f"{_number(peak['createsPerSecond'])} / {_number(http['perSecond'])}",
            _percent(ratio(peak["createsPerSecond"], http["perSecond"])),
        ],
        [
            "relayed broker msgs/s vs RabbitMQ round trips",
            f"{_number(peak['brokerMessagesPerSecond'])} / {_number(broker['perSecond'])}",
            _percent(ratio(peak["brokerMessagesPerSecond"], broker["perSecond"])),
        ],
        [
            "create p50 latency vs create-request SQL p50",
            f"{_number(ours_p50)} / {_number(floor_p50)} ms",
            f"x{_number(ratio(ours_p50, floor_p50))}",
        ],
    ]
    return _table(["our figure ÷ floor (max-throughput phase, baseline)", "values", "ratio"], rows)


def _scaling(report: dict[str, Any]) -> list[str]:
    runs = report["runs"]
    base = runs[0]["phases"][0]
    rows = []
    for run in runs:
        peak = run["phases"][0]
        rows.append(
            [
                run["label"],
                _number(peak["createsPerSecond"]),
                _percent(ratio(peak["createsPerSecond"], base["createsPerSecond"]) - 1)
                if run is not runs[0]
                else "baseline",
                _number(peak["createLatencyMs"]["p99"]),
                _number(peak["endToEndPerSecond"]),
                _percent(ratio(peak["endToEndPerSecond"], base["endToEndPerSecond"]) - 1)
                if run is not runs[0]
                else "baseline",
                _number(peak["createdToFinalMs"]["p99"]),
                _number(peak.get("createdToWebhookMs", {}).get("p99")),  # "-" without webhooks
                "clean"
                if run["reconcile"] == []
                else "n/a"
                if run["reconcile"] is None
                else f"{len(run['reconcile'])} issues",
            ]
        )
    return _table(
        [
            "topology",
            "creates/s",
            "change",
            "create p99 ms",
            "end-to-end/s",
            "change",
            "created→final p99 ms",
            "created→webhook p99 ms",
            "reconcile",
        ],
        rows,
    )


def _resources(report: dict[str, Any]) -> list[str]:
    phases = report["runs"][0]["phases"]
    cpu = phases[0]["cpuPercentOfOneCore"]
    waits = phases[0].get("coreWaitPercent", {})  # reports before it was measured lack it
    lines = [
        "CPU during the baseline's max-throughput phase (% of one core; 200 % = the machine; "
        "MariaDB and RabbitMQ include anyone else's use of them), and how long each waited for "
        "a core (runnable, not running; % of the time, summed over threads; for MariaDB, whose "
        "connection threads come and go, a lower bound). A single-threaded service whose two "
        "figures add up to about 100 % was runnable all along: the cores, shared by every "
        "process, were its limit. CPU ms per payout: its CPU time over the payouts created in "
        "the same time (the phase's creates/s), in steady state what each payout costs it; "
        "steadier from run to run than creates/s, which the hour's noise moves. `system`: all "
        "but the bench's own load generator and webhook receiver.",
        "",
    ]
    creates = phases[0]["createsPerSecond"]
    system = sum(share for name, share in cpu.items() if name not in BENCH_PROCESSES)
    shares = [
        *sorted(cpu.items(), key=lambda item: -item[1]),
        ("system", system),
        ("all", sum(cpu.values())),
    ]
    lines += _table(
        ["process", "CPU %", "CPU ms per payout", "waiting for a core %"],
        [
            [
                name,
                _number(share),
                _number(cpu_ms_per_payout(share, creates), 2),
                _number(waits.get(name)),
            ]
            for name, share in shares
        ],
    )
    counters = phases[0].get("databasePerPayout", {})
    if counters:
        lines += [
            "",
            "MariaDB per created payout in that phase (server-wide counters, so anyone "
            "else's queries count too):",
            "",
        ]
        lines += _table(list(counters), [[_number(value, 2) for value in counters.values()]])
    soak = next((phase for phase in phases if phase["role"] == "soak"), None)
    if soak and soak.get("rss"):
        lines += [
            "",
            f"RSS over the soak ({soak['durationS']:.0f} s at {soak['load']}; mean of the "
            "first and last fifth of the samples):",
            "",
        ]
        lines += _table(
            ["process", "start MiB", "end MiB", "max MiB", "change"],
            [
                [
                    name,
                    _number(d["startMiB"]),
                    _number(d["endMiB"]),
                    _number(d["maxMiB"]),
                    f"{d['change']:+.1%}",
                ]
                for name, d in soak["rss"].items()
            ],
        )
    return lines


def cpu_ms_per_payout(percent_of_one_core: float, creates_per_second: float) -> float | None:
    """CPU milliseconds per created payout, from a CPU share (% of one core) and creates/s."""
    if not creates_per_second:
        return None
    return 10 * percent_of_one_core / creates_per_second


def _lock_waits(report: dict[str, Any]) -> list[str]:
    waits = report["runs"][0]["phases"][0]["lockWaits"]
    lines = [
        f"Sampled {waits[0]['samples']} times; a row is one (waiting, blocking) pair and how many "
        "samples saw it.",
        "",
    ]
    rows = [
        [w["table"], w["mode"], f"`{w['waiting']}`", f"`{w['blocking']}`", str(w["seenInSamples"])]
        for w in waits
    ]
    return lines + _table(["table", "mode", "waiting", "blocking", "samples"], rows)


def _profiles(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, profile in report.get("profiles", {}).items():
        lines += [
            "",
            f"**{name}** ({profile['samples']} samples of the event-loop thread; on a busy machine"
            " a thread waiting for a core counts as on it):",
            "",
        ]
        rows = [[entry["function"], f"{entry['percent']}%"] for entry in profile["libraries"]]
        lines += _table(["self time by package", "share"], rows)
        lines += [""]
        rows = [[entry["function"], f"{entry['percent']}%"] for entry in profile["self"][:10]]
        lines += _table(["self time: function", "share"], rows)
        lines += [""]
        rows = [[entry["function"], f"{entry['percent']}%"] for entry in profile["ours"][:10]]
        lines += _table(["inclusive: our function", "share"], rows)
    return lines


def markdown(report: dict[str, Any], chart_name: str) -> str:
    failed = [
        f"- {run['label']} / {phase['name']}: {problem}"
        for run in report["runs"]
        for phase in run["phases"]
        for problem in phase["problems"]
    ]
    lines = [
        f"# Benchmark {report['startedAt']} (revision {report['revision']})",
        "",
        CORES_NOTE.format(cores=report["cores"]),
        "",
        f"Command: `{report['command']}` — {report['elapsedS']:.0f} s in all. Webhook service: "
        f"{'running' if report['webhooks'] else 'absent, so end-to-end stops at SUCCESS in MySQL'}."
        f" Service logs and profiles: `{report['workDir']}`.",
        "",
        *_steal(report),
        "",
        "## Targets",
        "",
        *_verdicts(report),
        "",
        "## Errors",
        "",
        *(
            failed
            or [
                "None: every create answered 2xx, every payout reached "
                "SUCCESS and every event's webhook arrived signed."
            ]
        ),
        "",
        "## Floor",
        "",
        *_floor(report),
        "",
        *_ratios(report),
        "",
        f"## Baseline: {report['runs'][0]['label']}",
        "",
        *_phases(report["runs"][0], report["webhooks"]),
        "",
        "Latency columns count payouts created after the warm-up; created→final is the payout "
        "row's createdAt to its payout.succeeded event (both stamped by the services); "
        "webhook legs use the receiver's clock on the same machine.",
        "",
        "## Statements and commits per payout, by stage",
        "",
        *_statement_budget(report["runs"][0]),
        "",
        "## Bulk payouts",
        "",
        *_payroll(report["runs"][0]),
        "",
        "## Scaling (max-throughput phase of each topology)",
        "",
        *_scaling(report),
        "",
        "## Resources",
        "",
        *_resources(report),
        "",
    ]
    if report["runs"][0]["phases"][0].get("lockWaits"):
        lines += ["## Row-lock waits (baseline max-throughput phase)", "", *_lock_waits(report), ""]
    if report.get("profiles"):
        lines += ["## Profiles (py-spy, baseline max-throughput phase)", *_profiles(report), ""]
    lines += [f"![throughput and latency over time]({chart_name})", ""]
    return "\n".join(lines)


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = report["runs"][0]
    figure, axes = plt.subplots(2, 2, figsize=(14, 9))
    throughput, create, end_to_end, scaling = axes.flat
    origin = run["timelines"][0]["start"] if run["timelines"] else 0.0
    for number, series in enumerate(run["timelines"]):
        offset = series["start"] - origin
        seconds = [offset + index + 0.5 for index in range(len(series["creates"]))]
        label = number == 0  # one legend entry per series
        throughput.plot(
            seconds, series["creates"], color="tab:blue", label="creates/s" if label else None
        )
        throughput.plot(
            seconds, series["finals"], color="tab:green", label="SUCCESS/s" if label else None
        )
        if "webhooks" in series:
            throughput.plot(
                seconds,
                series["webhooks"],
                color="tab:red",
                label="succeeded webhooks/s" if label else None,
            )
        create.plot(
            seconds, _nan(series["createP50"]), color="tab:blue", label="p50" if label else None
        )
        create.plot(
            seconds, _nan(series["createP99"]), color="tab:purple", label="p99" if label else None
        )
        end_to_end.plot(
            seconds,
            _nan(series["createdToFinalP99"]),
            color="tab:green",
            label="created→SUCCESS p99" if label else None,
        )
        if "createdToWebhookP99" in series:
            end_to_end.plot(
                seconds,
                _nan(series["createdToWebhookP99"]),
                color="tab:red",
                label="created→webhook p99" if label else None,
            )
        for axis in (throughput, create, end_to_end):
            axis.axvline(offset, color="grey", linestyle=":", linewidth=1)
            axis.axvline(offset + series["loadEndsAt"], color="grey", linestyle="--", linewidth=0.8)
        throughput.annotate(
            run["phases"][number]["role"],
            (offset, 0),
            fontsize=8,
            xytext=(3, 3),
            textcoords="offset points",
        )
    throughput.set(
        title="Throughput, baseline (dotted: phase starts, dashed: load ends)",
        xlabel="s",
        ylabel="per second",
    )
    create.set(title="Create latency (by second sent)", xlabel="s", ylabel="ms", yscale="log")
    end_to_end.set(
        title="End-to-end latency p99 (by second created)", xlabel="s", ylabel="ms", yscale="log"
    )
    labels = [r["label"].replace(", webhooks x1", "").replace(", ", "\n") for r in report["runs"]]
    positions = range(len(labels))
    creates = [r["phases"][0]["createsPerSecond"] for r in report["runs"]]
    finals = [r["phases"][0]["endToEndPerSecond"] for r in report["runs"]]
    for shift, values, name in ((-0.2, creates, "creates/s"), (0.2, finals, "end-to-end/s")):
        bars = scaling.bar([p + shift for p in positions], values, width=0.4, label=name)
        scaling.bar_label(bars, fmt="%.0f", fontsize=8)
    scaling.set_xticks(list(positions), labels, fontsize=8)
    floor = report["floor"].get("createTransaction")
    floor_note = f" (create-SQL floor: {floor['perSecond']:.0f}/s)" if floor else ""
    scaling.set(title=f"Scaling: max-throughput phase{floor_note}", ylabel="per second")
    for axis in axes.flat:
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.suptitle(
        f"make bench {report['startedAt']} — floor, system and load generator share "
        f"{report['cores']} cores"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if value is None else value for value in values]


def write_report(report: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"bench-{report['startedAt']}"
    json_path, markdown_path, chart_path = (
        stem.with_suffix(".json"),
        stem.with_suffix(".md"),
        stem.with_suffix(".png"),
    )
    safe = _json_safe(report)
    temporary = json_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(safe, indent=2, ensure_ascii=False) + "\n")
    temporary.replace(json_path)
    chart(safe, chart_path)
    markdown_path.write_text(markdown(safe, chart_path.name))
    return [markdown_path, json_path, chart_path]
