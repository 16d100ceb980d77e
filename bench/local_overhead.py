"""Local-mode orchestration overhead: Stagecoach vs LangGraph on the same graphs.

Both run every stage as one HTTP call to the same OpenAI-compatible server that answers
after a fixed delay (default 20 ms), so the only difference is the orchestration:
scheduling, prompt rendering, token counting, output storage and trace writing for
Stagecoach; the Pregel loop and state reducers for LangGraph. Reported per graph:
makespan, makespan ÷ critical path (depth × delay) and overhead per stage
((makespan − critical path) ÷ stages), measured in this process around the executor and
around LangGraph's ``ainvoke``; then whole processes: ``stagecoach run FILE`` (manifest
loading, validation, the run, the merged trace, the HTML report and the summary) against
a Python program that imports LangGraph and makes the same calls. Last, stages per
second of a 500-stage run against the replay provider (no network at all), in process
and as a whole ``stagecoach run`` including its reports.

Run directories go under ``--workdir`` (default ``.stagecoach/bench``, beside the default
run store, ``.stagecoach/runs``): on some machines ``/tmp`` creates files several times
slower than the project's disk, which would measure the machine, not the orchestrator.

Run: ``make bench`` (installs langgraph into .venv first). Prints tables; asserts
nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from operator import or_
from pathlib import Path
from typing import Annotated, Any, TypedDict

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).parent))
from graphs import Graph, depth, layered, research

GRAPHS = {"research": research, "layered-200": lambda: layered(200, 20),
          "layered-500": lambda: layered(500, 25)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _manifest(graph: Graph, provider: dict[str, Any], extra: list[dict[str, Any]]) -> str:
    import yaml

    stages = [{"name": n, "dependsOn": deps,
               "agent": {"prompt": f"Stage {n} on {{{{ params.topic }}}}", "maxTokens": 16}}
              for n, deps in graph]
    docs = [{"apiVersion": "stagecoach.dev/v1alpha1", "kind": "ModelProvider",
             "metadata": {"name": "llm"}, "spec": provider},
            {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "AgentPipeline",
             "metadata": {"name": "bench"},
             "spec": {"params": {"topic": "benchmarks"},
                      "defaults": {"provider": "llm", "model": "bench"}, "stages": stages}},
            *extra]
    return yaml.safe_dump_all(docs)


def _write_cassette(workdir: Path, cassette: list[dict[str, Any]]) -> None:
    import yaml

    (workdir / "cassette.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "stagecoach.dev/v1alpha1", "kind": "Cassette", "entries": cassette}))


async def run_stagecoach(graph: Graph, provider: dict[str, Any], workdir: Path,
                         cassette: list[dict[str, Any]] | None = None) -> float:
    from stagecoach.api import AgentPipeline, ModelProvider, load_documents, resolve_pipeline
    from stagecoach.local import LocalExecutor, RunOptions, new_run_dir
    from stagecoach_runner.providers import ProviderPool

    if cassette is not None:
        _write_cassette(workdir, cassette)
    docs, problems = load_documents(_manifest(graph, provider, []))
    assert not problems, problems
    pipeline = next(d.obj for d in docs if isinstance(d.obj, AgentPipeline))
    providers = {d.obj.metadata.name: d.obj for d in docs if isinstance(d.obj, ModelProvider)}
    resolved, problems = resolve_pipeline(pipeline)
    assert resolved is not None, problems
    run_dir = new_run_dir(workdir / "runs", "bench", datetime.now(UTC))
    async with ProviderPool(base_dir=str(workdir)) as pool:
        _ = pool.client  # one-time per run (TLS context); LangGraph's client is made untimed too
        ex = LocalExecutor(resolved, providers, run_dir, pool,
                           options=RunOptions(base_dir=str(workdir)))
        started = time.perf_counter()
        state = await ex.execute()
        elapsed = time.perf_counter() - started
    assert state.phase == "Succeeded", (state.reason, state.message)
    return elapsed


class _State(TypedDict):
    results: Annotated[dict[str, str], or_]


async def run_langgraph(graph: Graph, url: str) -> float:
    from langgraph.graph import END, START, StateGraph

    async with httpx.AsyncClient(timeout=60) as client:
        def node(name: str) -> Any:
            async def call(state: _State) -> dict[str, Any]:
                r = await client.post(f"{url}/chat/completions", json={
                    "model": "bench", "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"Stage {name} on benchmarks"}]})
                r.raise_for_status()
                return {"results": {name: r.json()["choices"][0]["message"]["content"]}}
            return call

        builder = StateGraph(_State)
        children: dict[str, list[str]] = {n: [] for n, _ in graph}
        for name, deps in graph:
            builder.add_node(name, node(name))
            for d in deps:
                children[d].append(name)
        for name, deps in graph:
            if not deps:
                builder.add_edge(START, name)
            elif len(deps) == 1:
                builder.add_edge(deps[0], name)
            else:
                builder.add_edge(deps, name)
            if not children[name]:
                builder.add_edge(name, END)
        app = builder.compile()
        started = time.perf_counter()
        out = await app.ainvoke({"results": {}}, {"recursion_limit": 100_000})
        elapsed = time.perf_counter() - started
    assert len(out["results"]) == len(graph)
    return elapsed


def process_stagecoach(graph: Graph, provider: dict[str, Any], workdir: Path,
                       cassette: list[dict[str, Any]] | None = None) -> float:
    """Wall time of ``stagecoach run`` on the graph's manifest, start to exit."""
    if cassette is not None:
        _write_cassette(workdir, cassette)
    manifest = workdir / "bench.yaml"
    manifest.write_text(_manifest(graph, provider, []))
    exe = Path(sys.executable).with_name("stagecoach")
    started = time.perf_counter()
    done = subprocess.run([str(exe), "run", str(manifest), "--store", str(workdir / "runs")],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:] or done.stdout[-2000:]
    return elapsed


def process_langgraph(graph_name: str, url: str) -> float:
    """Wall time of a Python program that imports LangGraph and runs the same graph."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--langgraph-program", graph_name, url],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    return elapsed


def _workdir(root: Path) -> tempfile.TemporaryDirectory[str]:
    root.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed in-process runs per peer and graph first (default: "
                         "%(default)s), so one-time work (template compiles, schema and "
                         "connection set-up) is not counted as per-stage overhead")
    ap.add_argument("--workdir", type=Path, default=Path(".stagecoach/bench"),
                    help="where run directories go (default: %(default)s)")
    ap.add_argument("--langgraph-program", nargs=2, metavar=("GRAPH", "URL"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.langgraph_program:  # the whole-process peer: LangGraph and nothing else
        name, url = args.langgraph_program
        asyncio.run(run_langgraph(GRAPHS[name](), url))
        return
    port = _free_port()
    server = subprocess.Popen([sys.executable, str(Path(__file__).parent / "fake_llm.py"),
                               str(port), str(args.delay_ms)])
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        provider = {"type": "openai", "baseURL": url,
                    "models": {"bench": {"contextWindow": 100000}},
                    "request": {"timeout": "60s", "retries": 0}}
        try:
            import langgraph  # noqa: F401
            have_langgraph = True
        except ImportError:
            have_langgraph = False
        rows = []
        for label, key in (("research (10 stages)", "research"),
                           ("layered 200 (20 wide)", "layered-200")):
            graph = GRAPHS[key]()
            crit = depth(graph) * args.delay_ms / 1000
            results: dict[str, list[float]] = {"stagecoach": [], "langgraph": [],
                                               "sc-tmpfs": []}
            whole: dict[str, list[float]] = {"stagecoach": [], "langgraph": [],
                                             "sc-tmpfs": []}
            for _ in range(args.warmup):
                with _workdir(args.workdir) as tmp:
                    asyncio.run(run_stagecoach(graph, provider, Path(tmp)))
                if have_langgraph:
                    asyncio.run(run_langgraph(graph, url))
            for _ in range(args.repeat):
                with _workdir(args.workdir) as tmp:
                    results["stagecoach"].append(
                        asyncio.run(run_stagecoach(graph, provider, Path(tmp))))
                with _workdir(args.workdir) as tmp:
                    whole["stagecoach"].append(process_stagecoach(graph, provider, Path(tmp)))
                if have_langgraph:
                    results["langgraph"].append(asyncio.run(run_langgraph(graph, url)))
                    whole["langgraph"].append(process_langgraph(key, url))
                if TMPFS.is_dir():  # the same run with its directory in memory
                    with _workdir(TMPFS / "stagecoach-bench") as tmp:
                        results["sc-tmpfs"].append(
                            asyncio.run(run_stagecoach(graph, provider, Path(tmp))))
                    with _workdir(TMPFS / "stagecoach-bench") as tmp:
                        whole["sc-tmpfs"].append(
                            process_stagecoach(graph, provider, Path(tmp)))
            for peer, times in results.items():
                if not times:
                    continue
                m = statistics.median(times)
                rows.append((label, peer, len(graph), depth(graph), crit, m, m / crit,
                             (m - crit) / len(graph) * 1000,
                             (min(times) - crit) / len(graph) * 1000,
                             statistics.median(whole[peer])))
        print(f"\nLocal orchestration overhead, provider delay {args.delay_ms:.0f} ms, "
              f"median of {args.repeat} runs after {args.warmup} untimed, run directories "
              f"under {args.workdir}")
        print(f"{'graph':24} {'peer':11} {'stages':>6} {'depth':>5} {'crit(s)':>8} "
              f"{'makespan(s)':>11} {'ratio':>6} {'overhead/stage(ms)':>19} "
              f"{'best(ms)':>8} {'process(s)':>10}")
        for r in rows:
            print(f"{r[0]:24} {r[1]:11} {r[2]:6d} {r[3]:5d} {r[4]:8.3f} {r[5]:11.3f} "
                  f"{r[6]:6.2f} {r[7]:19.2f} {r[8]:8.2f} {r[9]:10.3f}")
        print("process: wall time of the whole program (`stagecoach run FILE` with its "
              "trace, report and summary; a Python program importing LangGraph)")
        print("overhead/stage: (median makespan - critical path) / stages; best: the same "
              "from the fastest run (the least disturbed by a noisy machine)")
        print("sc-tmpfs: Stagecoach with its run directory on tmpfs (not durable; shows "
              "what the disk costs)")
        if not have_langgraph:
            print("(langgraph not installed: `make bench` installs it)")
        disk_cost(args.workdir)
        graph = GRAPHS["layered-500"]()
        cassette = [{"stage": n, "response": {"content": "ok", "usage": {"input": 5,
                                                                           "output": 1}}}
                    for n, _ in graph]
        replay = {"type": "replay", "cassette": {"path": "cassette.yaml"}}
        times, procs = [], []
        for _ in range(args.repeat):
            with _workdir(args.workdir) as tmp:
                times.append(asyncio.run(run_stagecoach(graph, replay, Path(tmp), cassette)))
            with _workdir(args.workdir) as tmp:
                procs.append(process_stagecoach(graph, replay, Path(tmp), cassette))
        m, w = statistics.median(times), statistics.median(procs)
        print(f"\n500-stage replay run (layered, 25 wide): executor {m:.2f} s median, "
              f"{len(graph) / m:.0f} stages/s; `stagecoach run` with reports {w:.2f} s, "
              f"{len(graph) / w:.0f} stages/s")
        cli_start(args.repeat)
    finally:
        server.terminate()
        server.wait(10)


TMPFS = Path("/dev/shm")


def disk_cost(workdir: Path, files: int = 300) -> None:
    """What the run directory's disk charges for the files a stage writes: a directory,
    a temporary file renamed into place; next to tmpfs, so a slow disk shows as such."""
    import os
    import shutil

    print(f"\nDisk: a new directory + a file renamed into place ({files} of them)")
    for root in (workdir, TMPFS / "stagecoach-bench"):
        if not root.parent.is_dir():
            continue
        root.mkdir(parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(dir=root))
        try:
            started, cpu = time.perf_counter(), time.process_time()
            for i in range(files):
                d = base / f"s{i}"
                d.mkdir()
                (d / ".1.json.tmp").write_bytes(b"x" * 200)
                os.replace(d / ".1.json.tmp", d / "1.json")
            wall = (time.perf_counter() - started) / files
            cpu = (time.process_time() - cpu) / files
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(f"  {root!s:40} {wall * 1000:6.3f} ms wall, {cpu * 1000:6.3f} ms CPU per stage")


def _timed(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of running ``argv`` ``runs`` times."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                               else f"exit {done.returncode}")
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def cli_start(repeat: int) -> None:
    """``stagecoach validate`` of the small example beside the bare interpreter and an
    import of LangGraph's graph API, so a slow or noisy machine shows as such."""
    example = Path(__file__).parents[1] / "examples" / "research-report" / "pipeline.yaml"
    exe = str(Path(sys.executable).with_name("stagecoach"))
    runs = max(11, 7 * repeat)
    rows = [("python -c pass", [sys.executable, "-c", "pass"]),
            ("stagecoach validate (research example)", [exe, "validate", str(example)]),
            ("python -c 'import langgraph.graph'",
             [sys.executable, "-c", "import langgraph.graph"])]
    print(f"\nCLI start, median of {runs} runs")
    print(f"{'command':40} {'wall(ms)':>9} {'cpu(ms)':>8}")
    for label, argv in rows:
        try:
            wall, cpu = _timed(argv, runs)
        except RuntimeError as failed:  # e.g. langgraph not installed
            print(f"{label:40} failed: {failed}")
            continue
        print(f"{label:40} {wall * 1000:9.0f} {cpu * 1000:8.0f}")


if __name__ == "__main__":
    main()
