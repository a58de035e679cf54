#!/usr/bin/env python3
"""Runs the benchmark scenarios against a fresh vault and prints a Markdown table.

Called by scripts/bench after the set-up and the release build. Measures, per scenario:
throughput, p50/p99 latency, errors, the server's CPU seconds per 10,000 operations, and
HSM calls per 10,000 requests (from /metrics); then peak RSS, rewrap speed, and a final
correctness pass that detokenizes every token produced and compares the values.
"""
import argparse, glob, json, os, platform, re, subprocess, sys, time, urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
TLS = "data/dev/tls"
CLK = os.sysconf("SC_CLK_TCK")


# `--debug` (the CI smoke run) uses the debug build; the numbers then mean nothing.
PROFILE = "debug" if "--debug" in sys.argv else "release"
BIN = os.environ.get("TOKENVAULT_BENCH_BIN", f"target/{PROFILE}/tokenvault")


def bench_officers():
    """`--officer` arguments for a first init: two officer keys kept under data/bench."""
    args = []
    os.makedirs("data/bench/officers", mode=0o700, exist_ok=True)
    for name in ("alice", "bob"):
        pub = f"data/bench/officers/{name}.pub"
        if not os.path.exists(pub):
            key = f"data/bench/officers/{name}.key"
            if os.path.exists(key):
                os.remove(key)
            out = subprocess.run([BIN, "officer", "keygen", "--out", key],
                                 check=True, capture_output=True, text=True).stdout
            line = next(l for l in out.splitlines() if l.startswith("public key"))
            with open(pub, "w") as f:
                f.write(line.split()[-1])
        with open(pub) as f:
            args += ["--officer", f"{name}={f.read().strip()}"]
    return args


def loadgen():
    bins = sorted(glob.glob(f"target/{PROFILE}/deps/load-*"), key=os.path.getmtime)
    bins = [b for b in bins if os.access(b, os.X_OK) and not b.endswith(".d")]
    if not bins:
        sys.exit("load generator not built: run scripts/bench")
    return bins[-1]


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def peak_rss_mb(pid):
    return rss_parts(pid)["VmHWM"]


def rss_mb(pid):
    return rss_parts(pid)["VmRSS"]


def rss_parts(pid):
    """The resident set, its peak and its parts, in MB: RssAnon (the heap: allocator arenas,
    SQLite's page caches) and RssFile (mapped files: the binary, libraries and SQLite's WAL
    index, the `-shm` file, which is a shared file mapping and so counts here)."""
    parts = {"VmRSS": 0.0, "VmHWM": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in parts:
                parts[key] = int(line.split()[1]) / 1024
    return parts


def soak_row(elapsed, total, pid, wal):
    p = rss_parts(pid)
    wal_mb = os.path.getsize(wal) / 2**20 if wal and os.path.exists(wal) else 0.0
    print(f"| {elapsed:.0f} | {total:,} | {p['VmRSS']:.1f} | {p['RssAnon']:.1f} | "
          f"{p['RssFile']:.1f} | {wal_mb:.1f} |", flush=True)
    return p["VmRSS"]


def soak(pid, url, seconds, state, wal=None):
    """Mixed tokenize and detokenize at c=32 for `seconds` without ever reading /metrics (a
    vault nobody scrapes) and the server's RSS every 30 s: it must level off, not climb.
    Ends with the growth from the sample at 30 s (pools and caches warm) to the last."""
    print("| elapsed s | requests | RSS MB | heap (anon) | mapped files (with the WAL index) | WAL file MB |\n"
          "|---:|---:|---:|---:|---:|---:|", flush=True)
    start, total, next_sample = time.time(), 0, 0.0
    first, warm = soak_row(0, 0, pid, wal), None
    while time.time() - start < seconds:
        for scenario in ("tokenize", "detokenize"):
            total += run_load(url, scenario, seconds=5, concurrency=32, state=state)["requests"]
        if time.time() - start >= next_sample + 30:
            next_sample += 30
            now_rss = soak_row(time.time() - start, total, pid, wal)
            warm = now_rss if warm is None else warm
    last = rss_mb(pid)
    warm = last if warm is None else warm
    print(f"\n- soak: {total:,} requests in {time.time() - start:.0f} s; RSS {first:.1f} MB idle, "
          f"{warm:.1f} MB after 30 s, {last:.1f} MB at the end: growth {last - warm:+.1f} MB "
          f"(target < 5 MB)", flush=True)


def luhn_pan(rng):
    """A random Luhn-valid 16-digit Visa-range PAN."""
    body = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(body)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return "".join(map(str, body)) + str((10 - total % 10) % 10)


def import_file(n, name):
    """A CSV of n random PANs with an id column, made once and kept (`name` seeds it)."""
    path = f"data/bench/{name}-{n}.csv"
    if not os.path.exists(path):
        import random
        rng = random.Random(f"{name}{n}")
        with open(path + ".tmp", "w") as f:
            f.write("id,pan\n")
            for i in range(n):
                f.write(f"{i},{luhn_pan(rng)}\n")
        os.replace(path + ".tmp", path)
    return path


def run_import(env, n, tag, name="import"):
    """`tokenvault import` of n PANs as the app client; returns (seconds, values/s)."""
    out = f"data/bench/{tag}-{name}-{n}.out.csv"
    for stale in (out, out + ".import-state"):
        if os.path.exists(stale):
            os.remove(stale)
    t0 = time.time()
    res = subprocess.run([BIN, "import", "--as", "app", "--type", "pan",
                          "--id-column", "id", "--value-column", "pan", "--quiet",
                          "--input", import_file(n, name), "--output", out],
                         env=env, check=True, capture_output=True, text=True)
    secs = time.time() - t0
    m = re.search(r"\((\d+) records/s\)", res.stdout)
    os.remove(out)
    return secs, (float(m.group(1)) if m else n / secs)


def mask_file(n):
    """A 5-column CSV of n customers (card, SSN, e-mail, name, address) plus an id, kept."""
    path = f"data/bench/mask-{n}.csv"
    if not os.path.exists(path):
        import random
        rng = random.Random(f"mask{n}")
        with open(path + ".tmp", "w") as f:
            f.write("id,card_number,ssn,email,name,address\n")
            for i in range(n):
                f.write(f"{i},{luhn_pan(rng)},{rng.randrange(100, 665):03}-{rng.randrange(10, 99)}-"
                        f"{rng.randrange(1000, 9999)},user{i}@corp.io,Name{i % 997} Surname{i % 991},"
                        f"{rng.randrange(1, 9999)} Road {i % 500}\n")
        os.replace(path + ".tmp", path)
    return path


def run_mask(env, n, tag):
    """`tokenvault mask` of n 5-column rows; returns (seconds, rows/s)."""
    out = f"data/bench/{tag}-mask-{n}.out.csv"
    for stale in (out, out + ".mask-state"):
        if os.path.exists(stale):
            os.remove(stale)
    src = mask_file(n)
    t0 = time.time()
    subprocess.run([BIN, "mask", "--columns",
                    "card_number=pan,ssn=ssn,email=email,name=name,address=address",
                    "--input", src, "--output", out, "--quiet"],
                   env=env, check=True, capture_output=True, text=True)
    secs = time.time() - t0
    os.remove(out)
    return secs, n / secs


def hsm_calls(url):
    """HSM calls on the request path: every op except the background ones — `sign`, the
    audit checkpoint signature once per 1,000 events, and `probe`, the HSM health check
    once per `hsm.health_interval_ms`."""
    out = subprocess.run(
        ["curl", "-s", "--cacert", f"{TLS}/ca.pem", "--cert", f"{TLS}/auditor.pem", "--key", f"{TLS}/auditor-key.pem", f"{url}/metrics"],
        capture_output=True, text=True).stdout
    calls = re.findall(r'^tokenvault_hsm_calls_total\{op="([^"]+)"\} (\S+)', out, re.M)
    return sum(float(n) for op, n in calls if op not in ("sign", "probe"))


def run_load(url, scenario, seconds=None, concurrency=32, count=None, state=None, malformed=0):
    cmd = [loadgen(), "--url", url, "--tls", TLS, "--scenario", scenario, "--concurrency", str(concurrency)]
    if seconds:
        cmd += ["--seconds", str(seconds)]
    if count:
        cmd += ["--count", str(count)]
    if state:
        cmd += ["--state", state]
    if malformed:
        cmd += ["--malformed", str(malformed)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def start_server(env):
    server = subprocess.Popen([BIN, "serve"], env={**env, "TOKENVAULT_LOG": "info"},
                              stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        if "listening" in line:
            break
    else:
        sys.exit("the server exited before it listened")
    # Keep draining its log so it never blocks on a full pipe.
    import threading
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
    return server


def measure(url, pid, scenario, conc, state, seconds, mal=0):
    c0, h0 = cpu_seconds(pid), hsm_calls(url)
    r = run_load(url, scenario, seconds=seconds, concurrency=conc, state=state, malformed=mal)
    c1, h1 = cpu_seconds(pid), hsm_calls(url)
    ops = max(r["values"], 1)
    return {
        "rate": r["values_per_s"],
        "unit": "values/s" if scenario.startswith("batch") else "req/s",
        "p50": r["p50_ms"], "p99": r["p99_ms"], "errors": r["errors"],
        "cpu": (c1 - c0) / ops * 10000, "hsm": (h1 - h0) / max(r["requests"], 1) * 10000,
        "secs": r["seconds"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres", action="store_true")
    ap.add_argument("--preload", default="0")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--debug", action="store_true",
                    help="a smoke run on the debug build (CI): every scenario runs, no number is meaningful")
    ap.add_argument("--scenarios", default="",
                    help="comma-separated scenario keys to run (default: all), e.g. tokenize,batch1000")
    ap.add_argument("--no-rewrap", action="store_true", help="skip the rotation and rewrap row")
    ap.add_argument("--import-rows", type=int, default=1_000_000,
                    help="rows of the `tokenvault import` scenario (0: skip it)")
    ap.add_argument("--mask-rows", type=int, default=1_000_000,
                    help="rows of the `tokenvault mask` scenario (0: skip it); whole-process time, vault opening included")
    ap.add_argument("--soak", type=float, default=0,
                    help="instead of the table: this many seconds of load with no /metrics scrape, RSS every 30 s")
    ap.add_argument("--rewrap-only", action="store_true",
                    help="only preload, rotate and rewrap: the sweep's records/s at each --preload size")
    a = ap.parse_args()
    env = dict(os.environ)
    env["SOFTHSM2_CONF"] = os.path.join(ROOT, "softhsm/softhsm2.conf")
    env["TOKENVAULT_LOG"] = "warn"
    rows, notes = [], []
    started_all = time.time()
    for n in [int(x) for x in a.preload.split(",")]:
        tag = f"bench{int(time.time())}_{n}"
        os.makedirs("data/bench", exist_ok=True)
        if a.postgres:
            admin = os.environ.get("TOKENVAULT_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
            subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE tv_{tag}"], check=True)
            env["TOKENVAULT_DATABASE__URL"] = admin.rsplit("/", 1)[0] + f"/tv_{tag}"
            backend = "PostgreSQL 15 (local)"
        else:
            env["TOKENVAULT_DATABASE__URL"] = f"sqlite://data/bench/{tag}.db"
            backend = "SQLite (WAL, synchronous=FULL)"
        env["TOKENVAULT_HSM__LABEL_PREFIX"] = tag
        env["TOKENVAULT_SERVER__LISTEN"] = "127.0.0.1:18443"
        env["TOKENVAULT_LIMITS__MAX_BATCH"] = "1000"
        env["TOKENVAULT_DEV_MODE"] = "true"  # the development clients drive the load
        state = f"data/bench/{tag}.tokens"
        subprocess.run([BIN, "init", *bench_officers()], env=env, check=True, capture_output=True)
        server = start_server(env)
        url = "https://localhost:18443"
        try:
            if a.soak:
                wal = None if a.postgres else f"data/bench/{tag}.db-wal"
                return soak(server.pid, url, a.soak, state, wal)
            if n:
                secs, _ = run_import(env, n, tag, name="preload")
                notes.append(f"preloaded {n:,} tokens through `tokenvault import` in {secs:.0f} s")
            for name, scenario, conc, mal in [] if a.rewrap_only else [
                ("tokenize", "tokenize", 32, 0),
                ("detokenize", "detokenize", 32, 0),
                ("tokenize, 1 % malformed mixed in", "tokenize", 32, 1),
                ("batch tokenize, 100 per request", "batch100", 8, 0),
                ("batch tokenize, 1,000 per request", "batch1000", 4, 0),
                ("encrypt 1 KiB", "encrypt", 32, 0),
                ("decrypt 1 KiB", "decrypt", 32, 0),
                ("Vault transit encrypt 1 KiB", "vault-encrypt", 32, 0),
                ("Vault transit decrypt 1 KiB", "vault-decrypt", 32, 0),
            ]:
                if a.scenarios and scenario not in a.scenarios.split(","):
                    continue
                m = measure(url, server.pid, scenario, conc, state, a.seconds, mal)
                rows.append({"stored": n, "name": name, **m})
            if a.import_rows and not a.rewrap_only:
                secs, rate = run_import(env, a.import_rows, tag)
                rows.append({"stored": n, "name": f"import {a.import_rows:,} values (`tokenvault import`, pan)",
                             "rate": rate, "unit": "values/s", "p50": None, "p99": None, "errors": 0,
                             "cpu": None, "hsm": None, "secs": secs})
            if a.mask_rows and not a.rewrap_only:
                secs, rate = run_mask(env, a.mask_rows, tag)
                rows.append({"stored": n, "name": f"mask {a.mask_rows:,} rows of 5 columns (`tokenvault mask`, CSV)",
                             "rate": rate, "unit": "rows/s", "p50": None, "p99": None, "errors": 0,
                             "cpu": None, "hsm": None, "secs": secs})
            rss = peak_rss_mb(server.pid)
            if not a.rewrap_only and (not a.scenarios or "detokenize" in a.scenarios.split(",")):
                # The same detokenize load with anomaly scoring off: what scoring costs.
                server.terminate()
                server.wait()
                server = start_server({**env, "TOKENVAULT_ANOMALY__ENABLED": "false"})
                m = measure(url, server.pid, "detokenize", 32, state, a.seconds)
                rows.append({"stored": n, "name": "detokenize, anomaly scoring off", **m})
                server.terminate()
                server.wait()
                server = start_server(env)
            # Correctness: every token produced by the tokenize runs comes back as its value.
            produced = sum(1 for _ in open(state)) if os.path.exists(state) else 0
            v = run_load(url, "verify", concurrency=32, state=state) if produced else None
            if v and (v["mismatches"] or v["errors"] or v["requests"] != produced):
                notes.append(f"CORRECTNESS FAILURE at {n:,} stored: {v}")
            elif v:
                notes.append(f"{n:,} stored: all {produced:,} tokens produced detokenized to their values (0 mismatches); peak RSS {rss:.0f} MB")
            # Rewrap: rotate and re-seal everything stored under the old version.
            # Each is a request one officer signs (--key): it runs at once.
            officer = ["--key", "data/bench/officers/alice.key"]
            if not a.no_rewrap:
                subprocess.run([BIN, "keys", "rotate", "pan", *officer], env=env, check=True, capture_output=True)
                out = subprocess.run([BIN, "keys", "rewrap", "pan", "--quiet", *officer],
                                     env=env, check=True, capture_output=True, text=True).stdout
                m = re.search(r"(\d+) of (\d+) records now under v\d+ in ([\d.]+)s \((\d+) records/s\)", out)
                if m:
                    rows.append({"stored": n, "name": f"rewrap ({int(m.group(1)):,} records)",
                                 "rate": float(m.group(4)), "unit": "records/s", "p50": None, "p99": None,
                                 "errors": 0, "cpu": None, "hsm": None, "secs": float(m.group(3))})
            rows.append({"stored": n, "name": "peak RSS of the server", "rate": rss, "unit": "MB", "p50": None,
                         "p99": None, "errors": None, "cpu": None, "hsm": None, "secs": None})
        finally:
            server.terminate()
            server.wait()
    f = lambda x, fmt: "–" if x is None else format(x, fmt)
    print(f"\n**Machine:** {machine()}; load generator on the same machine. **Backend:** {backend}. "
          f"TLS 1.3 with client certificates, SoftHSM2 key hierarchy, durable commits, an audit event per request. "
          f"{a.seconds:.0f} s per scenario; whole run {time.time() - started_all:.0f} s.\n")
    print("| stored tokens | scenario | throughput | p50 ms | p99 ms | errors | server CPU s / 10k ops | HSM calls / 10k req |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['stored']:,} | {r['name']} | {f(r['rate'], ',.0f')} {r['unit']} | {f(r['p50'], '.1f')} | {f(r['p99'], '.1f')} "
              f"| {f(r['errors'], 'd')} | {f(r['cpu'], '.2f')} | {f(r['hsm'], '.1f')} |")
    print()
    print("- HSM calls counts every PKCS#11 call on the request path; the background audit checkpoint "
          "signature (one per 1,000 events or 60 s) is not a request-path call and is left out.")
    for n in notes:
        print(f"- {n}")
    if any("FAILURE" in n for n in notes):
        sys.exit(1)


if __name__ == "__main__":
    main()
