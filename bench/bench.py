#!/usr/bin/env python3
"""kvsync against what users would otherwise use, side by side.

Run through ./bench/run.sh (it installs what this needs and builds the
release binaries). Starts `kvsync-fake serve` with injected latency, stores
secrets through its admin API, runs each contender for each N, reads the
emulator's request counters, measures the agent's steady state, prints the
tables and writes BENCHMARKS.md. Standard library only.
"""

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
KVSYNC = ROOT / "target" / "release" / "kvsync"
FAKE = ROOT / "target" / "release" / "kvsync-fake"
VENV_PY = WORK / "venv" / "bin" / "python"
# azure-identity accepts an Arc challenge file only in this directory
# (Linux), so the emulator's token dir must be it: state dir = its parent.
ARC_DIR = Path("/var/opt/azcmagent")
# kvsync's default `[agent] concurrency` (src/config/mod.rs).
KVSYNC_CONCURRENCY = 16
SECRET_PREFIX = "bench-"
# Where the contenders write their files (`--out-dir`).
OUT = WORK / "out"

# No proxy for loopback, whatever the environment says.
URLOPEN = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Fake:
    """`kvsync-fake serve` with latency, driven through its admin API."""

    def __init__(self, latency_kv: int, latency_himds: int):
        self.proc = subprocess.Popen(
            [str(FAKE), "serve", "--state-dir", str(ARC_DIR),
             "--latency-kv", f"{latency_kv}ms", "--latency-himds", f"{latency_himds}ms"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "ready" not in line:
            raise SystemExit(f"kvsync-fake did not start: {line!r}")
        fields = dict(f.split("=", 1) for f in line.split()[2:])
        self.himds, self.vault, self.ca = fields["himds"], fields["vault"], fields["ca"]
        if Path(fields["tokens"]) != ARC_DIR / "tokens":
            raise SystemExit(f"unexpected token dir {fields['tokens']}")
        self.token_endpoint = f"{self.himds}/metadata/identity/oauth2/token"

    def admin(self, method: str, path: str, body: bytes = b"", ctype: str = "text/plain"):
        req = urllib.request.Request(f"{self.himds}/admin/{path}", data=body or None,
                                     method=method, headers={"content-type": ctype})
        with URLOPEN(req, timeout=30) as r:
            data = r.read()
        return json.loads(data) if data else None

    def counters(self) -> dict:
        return self.admin("GET", "counters")

    def reset(self) -> None:
        self.admin("POST", "counters/reset")

    def forbid_next_list(self) -> None:
        fault = {"status": 403, "code": "ForbiddenByRbac", "times": 1}
        self.admin("POST", "faults", json.dumps(fault).encode(), "application/json")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def hold(self, n: int) -> None:
        """Make the vault hold exactly the first n bench secrets (a list
        covers the whole vault, so its size sets the list's cost)."""
        held = getattr(self, "held", 0)
        for i in range(held, n):
            self.admin("PUT", f"secrets/{SECRET_PREFIX}{i}", secret_value(i).encode())
        for i in range(n, held):
            self.admin("DELETE", f"secrets/{SECRET_PREFIX}{i}")
        self.held = n


def secret_value(i: int) -> str:
    return f"value-{i:04d}-" + "x" * 40


def kvsync_config(fake: Fake, n: int, out: Path, interval: str = "1s") -> Path:
    lines = [
        f'vault = "{fake.vault}"', "",
        "[auth]", 'method = "arc"', f'identity_endpoint = "{fake.token_endpoint}"',
        'audience = "https://vault.azure.net"', "",
        "[tls]", f'ca_file = "{fake.ca}"', "",
        "[agent]", f'interval = "{interval}"', 'jitter = "0s"', "",
        "[secrets]",
    ]
    lines += [f's{i} = "{SECRET_PREFIX}{i}"' for i in range(n)]
    for i in range(n):
        lines += ["", "[[file]]", f'path = "{out}/{SECRET_PREFIX}{i}"',
                  f'contents = "{{{{ secrets.s{i} }}}}"']
    path = WORK / f"kvsync-{n}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def contender_cmd(name: str, fake: Fake, n: int, out: Path):
    names = [f"{SECRET_PREFIX}{i}" for i in range(n)]
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(WORK),
                "NO_PROXY": "*", "no_proxy": "*"}
    if name == "kvsync once":
        return [str(KVSYNC), "once", "-c", str(kvsync_config(fake, n, out))], base_env
    arc_env = dict(base_env, IDENTITY_ENDPOINT=fake.token_endpoint, IMDS_ENDPOINT=fake.himds,
                   REQUESTS_CA_BUNDLE=fake.ca, SSL_CERT_FILE=fake.ca, CA_FILE=fake.ca)
    if name == "python sdk":
        script = ROOT / "bench" / "contenders" / "sdk.py"
        return [str(VENV_PY), str(script), fake.vault, str(out)] + names, arc_env
    script = ROOT / "bench" / "contenders" / "curl.sh"
    return ["bash", str(script), fake.vault, str(out)] + names, arc_env


def run_once(name: str, fake: Fake, n: int) -> dict:
    out = OUT / name.replace(" ", "-") / str(n)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd, env = contender_cmd(name, fake, n, out)
    tfile = WORK / "time.txt"
    fake.reset()
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", str(tfile)] + cmd, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{name} N={n} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    counters = fake.counters()
    rss_kb, user, sys_ = tfile.read_text().split()[-3:]
    written = sorted(out.iterdir())
    probe = out / f"{SECRET_PREFIX}{n - 1}"
    if len(written) != n or probe.read_text() != secret_value(n - 1):
        raise SystemExit(f"{name} N={n}: wrong output ({len(written)} files)")
    return {"wall": wall, "rss_mb": int(rss_kb) / 1024, "cpu": float(user) + float(sys_),
            "himds": counters["himds_requests"], "kv": counters["kv_requests"]}


def measure(name: str, fake: Fake, n: int, runs: int) -> dict:
    results = [run_once(name, fake, n) for _ in range(runs)]
    walls = [r["wall"] for r in results]
    row = {"contender": name, "n": n, "runs": runs, "wall_median": statistics.median(walls),
           "wall_min": min(walls), "wall_max": max(walls),
           "rss_mb": max(r["rss_mb"] for r in results),
           "cpu": statistics.median(r["cpu"] for r in results),
           "himds": results[-1]["himds"], "kv": results[-1]["kv"]}
    log(f"  {name:12} N={n:<4} wall {row['wall_median']:.3f}s "
        f"({row['wall_min']:.3f}-{row['wall_max']:.3f}) rss {row['rss_mb']:.1f} MB "
        f"cpu {row['cpu']:.2f}s himds {row['himds']} kv {row['kv']}")
    return row


def floor_seconds(n: int, lat_kv: int, lat_himds: int, concurrency: int) -> float:
    """Token flow (challenge + token: 2 HIMDS round trips) + ceil(N/c) Key
    Vault round trips; kvsync sends its token on the first request."""
    return (2 * lat_himds + math.ceil(n / concurrency) * lat_kv) / 1000


# ---------------------------------------------------------------- agent ---

class Agent:
    """A running `kvsync run`, its "round complete" lines counted."""

    def __init__(self, config: Path):
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(WORK), "KVSYNC_LOG": "info"}
        self.proc = subprocess.Popen([str(KVSYNC), "run", "-c", str(config)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.rounds = 0
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            if "round complete" in line:
                with self.cond:
                    self.rounds += 1
                    self.cond.notify_all()

    def wait_round(self, timeout: float = 60) -> int:
        with self.cond:
            seen = self.rounds
            if not self.cond.wait_for(lambda: self.rounds > seen, timeout):
                raise SystemExit("kvsync run: no round completed in time")
            return self.rounds

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> tuple:
        status = dict(line.split(":", 1) for line in
                      Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        kb = lambda k: int(status[k].split()[0]) / 1024  # noqa: E731
        return kb("VmRSS"), kb("VmHWM")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def steady(fake: Fake, n: int, seconds: float, list_allowed: bool) -> dict:
    fake.hold(n)
    out = OUT / "agent" / str(n)
    shutil.rmtree(out, ignore_errors=True)
    agent = Agent(kvsync_config(fake, n, out))
    try:
        agent.wait_round()
        if not list_allowed:
            fake.forbid_next_list()  # consumed by round 2's list: GETs from then on
        for _ in range(3):
            agent.wait_round()
        fake.reset()
        cpu0, start, t0 = agent.cpu_seconds(), agent.rounds, time.monotonic()
        while time.monotonic() - t0 < seconds:
            agent.wait_round()
        counters = fake.counters()
        cpu1, rounds = agent.cpu_seconds(), agent.rounds - start
        rss, hwm = agent.memory_mb()
    finally:
        agent.stop()
    row = {"n": n, "mode": "list + GET changed" if list_allowed else "GET each (list forbidden)",
           "seconds": seconds, "rounds": rounds, "cpu_ms": (cpu1 - cpu0) * 1000 / rounds,
           "rss_mb": rss, "hwm_mb": hwm, "kv": counters["kv_requests"] / rounds,
           "gets": counters["kv_gets"] / rounds, "lists": counters["kv_lists"] / rounds,
           "himds": counters["himds_requests"]}
    log(f"  run N={n} {row['mode']}: {rounds} rounds, {row['kv']:.1f} KV req/round, "
        f"cpu {row['cpu_ms']:.1f} ms/round, rss {rss:.1f} MB (peak {hwm:.1f})")
    return row


# --------------------------------------------------------------- report ---

def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    pkgs = version([str(VENV_PY), "-c", "import importlib.metadata as m; print(', '.join("
                    "f'{p} {m.version(p)}' for p in ('azure-identity', 'azure-keyvault-secrets')))"])
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "kvsync": version([str(KVSYNC), "--version"]),
            "python": version([str(VENV_PY), "--version"]) + f" ({pkgs})",
            "curl": " ".join(version(["curl", "--version"]).split()[:2]),
            "jq": version(["jq", "--version"])}


def contender_table(rows, floors) -> str:
    out = ["| N | contender | wall median (min–max) | × floor | peak RSS | CPU (user+sys) "
           "| token requests | Key Vault requests |",
           "|---:|---|---|---:|---:|---:|---:|---:|"]
    for n in sorted({r["n"] for r in rows}):
        fl = floors[n]
        out.append(f"| {n} | *floor* (c = {KVSYNC_CONCURRENCY}) | {fl * 1000:.0f} ms | 1.00 "
                   f"| | | 2 | {n} |")
        for r in (r for r in rows if r["n"] == n):
            out.append(
                f"| {n} | {r['contender']} | {r['wall_median'] * 1000:.0f} ms "
                f"({r['wall_min'] * 1000:.0f}–{r['wall_max'] * 1000:.0f}) "
                f"| {r['wall_median'] / fl:.2f} | {r['rss_mb']:.1f} MB | {r['cpu'] * 1000:.0f} ms "
                f"| {r['himds']} | {r['kv']} |")
    return "\n".join(out)


def steady_table(rows) -> str:
    out = ["| N | mode | duration | rounds | Key Vault requests / round (lists + GETs) "
           "| CPU / round | RSS (peak) | token requests |",
           "|---:|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['n']} | {r['mode']} | {r['seconds']:.0f} s | {r['rounds']} "
                   f"| {r['kv']:.1f} ({r['lists']:.1f} + {r['gets']:.1f}) | {r['cpu_ms']:.1f} ms "
                   f"| {r['rss_mb']:.1f} MB ({r['hwm_mb']:.1f} MB) | {r['himds']} |")
    return "\n".join(out)


def acceptance(rows, floors, steady_rows) -> list:
    def row(name, n):
        return next((r for r in rows if r["contender"] == name and r["n"] == n), None)
    checks = []
    k, py = row("kvsync once", 500), row("python sdk", 500)
    if k:
        ratio = k["wall_median"] / floors[500]
        checks.append((ratio <= 1.5, f"N=500 kvsync once within 1.5 × floor: {ratio:.2f} ×"))
        checks.append((k["rss_mb"] < 20, f"N=500 kvsync once peak RSS < 20 MB: {k['rss_mb']:.1f} MB"))
    if k and py:
        speedup = py["wall_median"] / k["wall_median"]
        checks.append((speedup >= 10, f"N=500 kvsync once ≥ 10 × faster than the Python SDK: {speedup:.1f} ×"))
    s = next((r for r in steady_rows if r["n"] == 500 and r["mode"].startswith("list")), None)
    if s:
        checks.append((s["kv"] <= 25, f"run, 500 unchanged secrets, listing allowed: ≤ 25 requests/round: {s['kv']:.1f}"))
    return checks


def write_report(args, info, rows, floors, steady_rows, checks) -> str:
    template = (ROOT / "bench" / "BENCHMARKS.template.md").read_text()
    lines = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {text}" for ok, text in checks)
    text = template.format(
        command=" ".join(["./bench/run.sh"] + sys.argv[1:]),
        latency_kv=args.latency_kv, latency_himds=args.latency_himds, runs=args.runs,
        concurrency=KVSYNC_CONCURRENCY, contenders=contender_table(rows, floors),
        steady=steady_table(steady_rows), acceptance=lines or "- (not measured)",
        steady_seconds=args.steady_seconds, **info)
    return text


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, 15 s steady state")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="1,10,100,500")
    ap.add_argument("--latency-kv", type=int, default=20, help="ms per Key Vault request")
    ap.add_argument("--latency-himds", type=int, default=2, help="ms per HIMDS request")
    ap.add_argument("--steady-seconds", type=float, default=120)
    ap.add_argument("--contenders", default="kvsync once,python sdk,curl + jq")
    ap.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--out-dir", default=str(OUT), help="where the contenders write files")
    args = ap.parse_args()
    OUT = Path(args.out_dir)
    if args.quick:
        args.runs, args.steady_seconds = min(args.runs, 3), min(args.steady_seconds, 15)
    sizes = [int(s) for s in args.sizes.split(",")]
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]

    if ARC_DIR.exists():
        raise SystemExit(f"{ARC_DIR} exists (an Azure Arc agent may be installed here); "
                         "the benchmark needs to create and remove it: run it elsewhere")
    WORK.mkdir(parents=True, exist_ok=True)
    info = machine()
    log(f"machine: {info['nproc']} × {info['cpu']}, kernel {info['kernel']}, load {info['load']}")
    fake = None
    try:
        fake = Fake(args.latency_kv, args.latency_himds)
        fake.hold(max(sizes))
        rows = []
        for n in sizes:
            for name in contenders:
                rows.append(measure(name, fake, n, args.runs))
        floors = {n: floor_seconds(n, args.latency_kv, args.latency_himds, KVSYNC_CONCURRENCY)
                  for n in sizes}
        steady_rows = [steady(fake, 100, args.steady_seconds, True)]
        short = min(args.steady_seconds, 20)
        steady_rows += [steady(fake, 100, short, False), steady(fake, 500, short, True),
                        steady(fake, 500, short, False)]
    finally:
        if fake:
            fake.stop()
        shutil.rmtree(ARC_DIR, ignore_errors=True)
    checks = acceptance(rows, floors, steady_rows)
    report = write_report(args, info, rows, floors, steady_rows, checks)
    print(contender_table(rows, floors) + "\n\n" + steady_table(steady_rows) + "\n")
    print("\n".join(f"{'PASS' if ok else 'FAIL'}: {t}" for ok, t in checks))
    Path(args.output).write_text(report)
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
