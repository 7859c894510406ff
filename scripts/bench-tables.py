#!/usr/bin/env python3
"""Turns a sinew-bench JSON report into the Markdown tables of docs/benchmarks.md.

    scripts/bench-tables.py docs/benchmarks/latest.json
"""
import json
import sys

report = json.load(open(sys.argv[1]))
plan = report["plan"]
print(f"Run of {report['date_utc']} on {report['cores']} cores; {plan['runs']} runs of every cell, "
      f"each in a fresh process, the cells of each round in random order (seed {plan['seed']}); "
      f"warm-up {plan['warmup_ms']} ms, measured {plan['duration_ms']} ms per run; "
      f"server runtime {plan['server_threads']} thread(s), client runtime "
      f"{plan['client_threads']} thread(s), the same for every system. Figures are medians "
      f"over the runs, ratios are ratios of medians.\n")
print("| ratio | value | target |")
print("|-------|-------|--------|")
targets = report.get("ratio_targets", {})
for key, value in report["ratios"].items():
    # Small ratios (shares of calls) keep three significant digits.
    shown = ("n/a" if value is None
             else f"{value:.2f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}")
    print(f"| `{key}` | {shown} | {targets.get(key, '')} |")
print()
idle = report.get("idle_cpu_percent") or {}
if idle:
    print("Idle CPU of a connected, quiet pair (% of one core; target ~0%): " +
          ", ".join(f"{system} {value:.2f}%" for system, value in idle.items()) + ".")
    print()
print("| system | payload | c / rate | k | QPS median [min-max] | QPS IQR | p50 µs | p99 µs | p999 µs | CPU µs/call |")
print("|--------|--------:|--:|--:|---------------------:|--------:|-------:|-------:|--------:|------------:|")
for r in report["results"]:
    load = (f"{r['rate']}/s open" if r.get("rate")
            else f"{r['concurrency']} streams" if r.get("streaming") else r["concurrency"])
    name = f"{r['system']} bytes" if r.get("bytes") else r["system"]
    head = f"| {name} | {r['payload_bytes']} | {load} | {r.get('connections', 1)} |"
    if r["failed"]:
        failed_calls = sum(run["errors"] for run in r["runs"])
        why = "; ".join(r["failures"]) or f"{failed_calls} failed calls over {len(r['runs'])} runs"
        print(f"{head} **failed**: {why} | | | | | |")
        continue
    m, q = r["median"], r["spread"]["qps"]
    if r["concurrency"] == 0 and not r.get("rate") and not r.get("streaming"):
        rss = r["spread"]["rss_per_connection"]
        print(f"| {r['system']} | {r['payload_bytes']} | idle | {r['connections']} | "
              f"server RSS per connection {m['rss_per_connection'] / 1024:.1f} KiB "
              f"[{rss['min'] / 1024:.1f}-{rss['max'] / 1024:.1f}] | | | | | |")
        continue
    print(f"{head} {m['qps']:.0f} [{q['min']:.0f}-{q['max']:.0f}] | {q['iqr']:.0f} | "
          f"{m['p50_us']:.1f} | {m['p99_us']:.1f} | {m['p999_us']:.1f} | {m['cpu_us_per_call']:.1f} |")
