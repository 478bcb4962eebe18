"""``streamal <verb>``: run, demo, broker, oracle, record, replay, simulate, bench."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO, TypeVar

from streamal.errors import ConfigError, DataWarning, StreamalError

T = TypeVar("T")


def _setup_logging(level: str) -> None:
    from streamal.logs import setup_logging

    setup_logging(level)


def _cmd_run(args: argparse.Namespace) -> int:
    from streamal.config import load_settings
    from streamal.service import Service

    settings = load_settings(args.config or os.environ.get("STREAMAL_CONFIG"))
    _setup_logging(settings.log_level)
    service = Service(settings, role=args.role)
    # Scoring allocates many short-lived objects; the default gen-0 threshold (700) made the cyclic garbage
    # collector take two thirds of decoding time (scripts/bench_throughput.py). Collect less often, and
    # leave what start-up built out of every collection.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    return asyncio.run(service.run())


def _kafka_options(bootstrap: str) -> dict[str, object]:
    from streamal.config import KafkaSettings
    from streamal.kafka.client import connection_options

    return connection_options(KafkaSettings(bootstrap_servers=bootstrap))


def _bootstrap(args: argparse.Namespace) -> str:
    servers: str | None = args.bootstrap_servers or os.environ.get("STREAMAL_KAFKA__BOOTSTRAP_SERVERS")
    if not servers:
        raise ConfigError("--bootstrap-servers (or STREAMAL_KAFKA__BOOTSTRAP_SERVERS) is required")
    return servers


def _note(text: str) -> None:
    print(f"streamal: {text}", file=sys.stderr, flush=True)


def _check_run_flags(args: argparse.Namespace) -> None:
    """The flags simulate and bench share: refused before anything is loaded, run or written."""
    if args.delay < 0:
        raise ConfigError(f"--delay {args.delay}: a label delay is a number of samples, 0 or more")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {args.out}: is a file; give a folder (it is created if missing)")


def _make_out(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot create the folder ({exc.strerror})") from None
    return out


def _policy_params(items: list[str] | None) -> dict[str, object]:
    """``--policy-param NAME=VALUE`` items; a value is an int, else a float, else the text."""
    params: dict[str, object] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--policy-param {item!r}: expected NAME=VALUE, e.g. warmup=0")
        value: object = text
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                pass
        params[key] = value
    return params


def _cmd_oracle(args: argparse.Namespace) -> int:
    import signal

    from streamal.datasets import load
    from streamal.oracle import run_oracle

    _setup_logging("INFO")
    truth = {r.id: r.label for r in load(args.data, target=args.target, id_column=args.id_column)}
    options = _kafka_options(_bootstrap(args))

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        stats = await run_oracle(
            options,
            truth,
            stopping,
            requests_topic=args.requests_topic,
            labels_topic=args.labels_topic,
            delay_seconds=args.delay,
            miss_rate=args.miss_rate,
        )
        logging.getLogger("streamal.oracle").info("stopped: %s", stats)

    asyncio.run(main())
    return 0


def _against_kafka(bootstrap: str, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; a cluster that cannot be reached, or any other Kafka error that ``work`` did not
    turn into a ``StreamalError`` itself, is a one-line error (exit 1), not a traceback."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    try:
        return asyncio.run(work)
    except KafkaConnectionError as exc:
        raise StreamalError(f"cannot reach the Kafka cluster at {bootstrap}: {exc}") from None
    except KafkaError as exc:
        raise StreamalError(f"the Kafka cluster at {bootstrap} failed the request: {exc!r}") from None


def _cmd_broker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from streamal.broker import serve

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return serve(args.host, args.port, stop, announce=lambda text: print(text, flush=True))


def _cmd_record(args: argparse.Namespace) -> int:
    import signal

    from streamal.replay import record

    bootstrap = _bootstrap(args)
    options = _kafka_options(bootstrap)
    stopped_by: list[str] = []

    async def main() -> int:
        # SIGTERM as SIGINT: stop within one fetch, with the file flushed and the summary printed
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stop(sig: signal.Signals) -> None:
            stopped_by.append(sig.name)
            stopping.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        return await record(
            options,
            args.topic,
            out,
            max_messages=args.max_messages,
            idle_seconds=args.idle_seconds,
            until_end=not args.follow,
            stopping=stopping,
        )

    try:
        out = open(args.out, "wb")  # noqa: SIM115 (closed below, after the recording)
    except OSError as exc:
        raise ConfigError(f"--out {args.out}: cannot write it ({exc.strerror or exc})") from None
    with out:
        n = _against_kafka(bootstrap, main())
    stopped = f" (stopped by {stopped_by[0]})" if stopped_by else ""
    print(f"recorded {n} messages from {', '.join(args.topic)} to {args.out}{stopped}", flush=True)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    import math

    from streamal.replay import replay, scan, topic_name_problem

    if args.offline:
        online = [
            flag
            for flag, given in (
                ("--bootstrap-servers", args.bootstrap_servers is not None),
                ("--speed", args.speed is not None),
                ("--topic-map", bool(args.topic_map)),
                ("--keep-partitions", args.keep_partitions),
                ("--keep-timestamps", args.keep_timestamps),
            )
            if given
        ]
        if online:
            raise ConfigError(f"{', '.join(online)}: not with --offline (nothing is sent to Kafka)")
        from streamal.offline import run_cli

        config = args.config or os.environ.get("STREAMAL_CONFIG")
        return run_cli(args.file, args.out, config, args.mode or "auto")
    if args.out is not None or args.config is not None:
        raise ConfigError("--out and --config go with --offline (a replay into Kafka writes no files)")
    if args.mode is not None:
        raise ConfigError("--mode goes with --offline (a replay into Kafka decides nothing)")
    speed = 0.0 if args.speed is None else args.speed  # (None: not given, which --offline checks)
    if not (math.isfinite(speed) and speed >= 0):
        raise ConfigError(
            f"--speed {speed}: must be 0 (as fast as possible) or more (1: as recorded, 2: twice as fast)"
        )
    topic_map = {}
    for item in args.topic_map:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ConfigError(f"--topic-map {item!r}: expected OLD=NEW")
        if problem := topic_name_problem(new):
            raise ConfigError(f"--topic-map {item}: {new!r} {problem}")
        topic_map[old] = new
    bootstrap = _bootstrap(args)
    options = _kafka_options(bootstrap)
    # the whole file is read once first: a bad line stops it before any is sent
    recording = scan(Path(args.file))
    for old in topic_map:
        if old not in recording.topics:
            _note(f"--topic-map {old}={topic_map[old]}: the recording has no topic {old!r}")
    n = 0
    if recording.count == 0:  # nothing to send: no connection either
        _note(f"warning: {args.file} holds no messages: nothing was replayed")
    else:
        n = _against_kafka(
            bootstrap,
            replay(
                options,
                recording,
                speed=speed,
                topic_map=topic_map,
                keep_partitions=args.keep_partitions,
                keep_timestamps=args.keep_timestamps,
            ),
        )
    print(f"replayed {n} messages from {args.file}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    import orjson

    from streamal.datasets import load
    from streamal.evaluation.plots import learning_curve_png
    from streamal.evaluation.simulate import simulate
    from streamal.policies import parameters

    _check_run_flags(args)
    policy_params = _policy_params(args.policy_param)
    if unknown := sorted(set(policy_params) - parameters(args.policy)):
        raise ConfigError(
            f"--policy-param {', '.join(unknown)}: the policy {args.policy} does not take "
            f"{'it' if len(unknown) == 1 else 'them'}; it takes {', '.join(sorted(parameters(args.policy)))}"
        )
    records = load(args.data, target=args.target, id_column=args.id_column, limit=args.limit)
    if not records:
        raise ConfigError(f"--data {args.data}: no samples")
    result = simulate(
        records,
        strategy=args.strategy,
        policy=args.policy,
        budget=args.budget,
        model=args.model,
        delay=args.delay,
        seed=args.seed,
        policy_params=policy_params,
    )
    out = _make_out(args.out)
    summary = {"data": args.data, **result.summary()}
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    learning_curve_png(
        out / "learning_curve.png",
        {f"{args.strategy} / {args.policy}": result.hits},
        title=f"{args.data}: prequential accuracy at budget {args.budget}",
    )
    print(orjson.dumps({k: v for k, v in summary.items() if k != "curve"}).decode())
    if result.labels_learned is not None and result.labels_learned < result.labels_used:
        waiting = result.labels_used - result.labels_learned
        _note(
            f"warning: {waiting} of the {result.labels_used} labels asked for were not learned: their "
            f"requests were still waiting for their label when the stream ended (--delay {args.delay}, "
            f"{result.n} samples)"
        )
    return 0


def _source_key(source: str) -> str:
    """What makes two ``--data`` values the same data set: a built-in's name, a file's resolved path."""
    from streamal.datasets import BUILTIN

    return source if source in BUILTIN else str(Path(source).resolve())


def _once(flag: str, values: list[T], key: Callable[[T], object] = lambda v: v) -> list[T]:
    """``values`` without repeats (in their order), saying which were given more than once."""
    first: dict[object, T] = {}
    times: dict[object, int] = {}
    for value in values:
        k = key(value)
        first.setdefault(k, value)
        times[k] = times.get(k, 0) + 1
    for k, n in times.items():
        if n > 1:
            _note(f"{flag} {first[k]} is given {n} times: run once")
    return list(first.values())


def _results_json(path: str) -> list[dict[str, object]]:
    """The rows of an earlier results.json (``--reuse``), read before anything runs."""
    import orjson

    try:
        rows = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"--reuse {path}: cannot read it ({exc.strerror})") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"--reuse {path}: not JSON ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"--reuse {path}: not the results.json of a streamal bench (a list of runs)")
    return rows


def _cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    import orjson
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streamal.datasets import BUILTIN
    from streamal.evaluation import bench, peers
    from streamal.evaluation.report import write_report
    from streamal.models import MODELS
    from streamal.policies import POLICIES, build_policy, parameters
    from streamal.strategies import STRATEGIES

    _check_run_flags(args)
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: must be at least 1 (or left out: one process per core)")
    datasets = _once("--data", args.data or list(bench.SUITE), key=_source_key)
    budgets = _once("--budget", args.budget or [0.1])
    for b in budgets:
        if not 0.0 < b <= 1.0:
            raise ConfigError(f"--budget {b}: must be in (0, 1]")
    if args.seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    bench.dataset_names(datasets)
    earlier = [_results_json(path) for path in args.reuse or []]
    console = Console(stderr=True)
    if args.peer:
        chosen = args.peer
    elif args.no_peers:
        chosen = []
    elif peers.available():
        chosen = list(peers.PEERS)
    else:
        console.print(
            "[yellow]the peers are not installed (pip install 'streamal[peers]'): running without[/]"
        )
        chosen = []
    if chosen and not peers.available():
        raise ConfigError("--peer: the peers are not installed; pip install 'streamal[peers]'")
    combos: list[bench.Combo] = []
    named: dict[str, str] = {}  # model -> the flag that names it first (for the message, when it cannot run)
    for item in args.combo or []:
        parts = item.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(
                f"--combo {item!r}: expected STRATEGY/POLICY or STRATEGY/POLICY/MODEL with a strategy of "
                f"{', '.join(STRATEGIES)} and a policy of {', '.join(POLICIES)}"
            )
        combo: bench.Combo = (parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])
        if missing := bench.missing_parts(combo):
            raise ConfigError(
                f"--combo {item!r}: unknown {', '.join(missing)}; strategies: {', '.join(STRATEGIES)}; "
                f"policies: {', '.join(POLICIES)}; models: {', '.join(MODELS)} or river:<module>.<Class>"
            )
        combos.append(combo)
        if len(parts) == 3:
            named.setdefault(parts[2], f"--combo {item!r}")
    if not combos:
        for combo in bench.COMBOS:
            if missing := bench.missing_parts(combo):
                console.print(f"[yellow]left out {'/'.join(combo)}: no {', '.join(missing)} here[/]")
            else:
                combos.append(combo)
    for model in args.model or []:
        if bench.missing_parts(("random", "threshold", model)):
            names = ", ".join(MODELS)
            raise ConfigError(f"--model {model!r}: choose one of {names} or river:<module>.<Class>")
        named.setdefault(model, f"--model {model!r}")
    if args.model:  # every combination that names no model, with each of these models instead
        combos = [c if len(c) == 3 else (c[0], c[1], m) for c in combos for m in args.model]
        combos += [(*bench.BASELINE, m) for m in args.model]  # random sampling with each model too
        combos = list(dict.fromkeys(combos))
    # every model of the run built once, as simulate builds its model: a river: name that is no classifier,
    # names nothing, or cannot be built stops the bench here, not when its first run starts
    for model in dict.fromkeys(bench.model_of(c) for c in [*combos, bench.BASELINE]):
        try:
            bench.check_model(model)
        except ConfigError as exc:
            raise ConfigError(f"{named.get(model, f'model {model!r}')}: {exc}") from None
    policy_params = _policy_params(args.policy_param)
    policies = sorted({bench.combo_parts(c)[1] for c in combos} | {bench.BASELINE[1]})
    for name, value in policy_params.items():
        takers = [p for p in policies if name in parameters(p)]
        if not takers:
            taken = sorted(set().union(*(parameters(p) for p in policies)))
            raise ConfigError(
                f"--policy-param {name}: no policy of this run ({', '.join(policies)}) takes it; they take "
                f"{', '.join(taken)}"
            )
        if len(takers) < len(policies):
            _note(f"--policy-param {name}={value}: for {', '.join(takers)} only (the others do not take it)")
    for policy in policies:  # a bad value is refused before anything runs
        try:
            build_policy(
                policy, budgets[0], params={k: v for k, v in policy_params.items() if k in parameters(policy)}
            )
        except ConfigError as exc:
            raise ConfigError(f"--policy-param, for {policy}: {str(exc).removeprefix('policy: ')}") from None
    limits = {
        source: args.limit if args.limit is not None else (bench.SUITE_LIMIT if source in BUILTIN else None)
        for source in datasets
    }
    for source in datasets:  # every data set once, up front: a file that cannot be run stops the bench here
        if not bench.records_of(source, args.target, limits[source]):
            raise ConfigError(f"--data {source}: no samples")
    tasks = []
    for source in datasets:
        tasks += bench.plan(
            [source],
            budgets,
            args.seeds,
            target=args.target,
            limit=limits[source],
            delay=args.delay,
            combos=combos,
            peers=chosen,
            policy_params=policy_params,
        )
    # the peers first: they take longest
    tasks.sort(key=lambda t: not t.is_peer)
    known: dict[int, dict[str, object]] = {}
    for path, rows in zip(args.reuse or [], earlier, strict=True):
        try:
            known.update(bench.reusable(tasks, rows))
        except (KeyError, TypeError):
            raise ConfigError(f"--reuse {path}: not the results.json of a streamal bench") from None
    if known:
        console.print(f"reusing {len(known)} scikit-activeml runs from {', '.join(args.reuse)}")
    out = _make_out(args.out)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task_id = progress.add_task("bench", total=len(tasks) - len(known), last="")

        finished = [0]
        step = max(1, (len(tasks) - len(known)) // 20)

        # every run is also written as it ends, so that a long bench shows its rows as it goes
        with (out / "results.partial.jsonl").open("wb") as partial:

            def done(row: dict[str, object]) -> None:
                partial.write(orjson.dumps(row) + b"\n")
                partial.flush()
                last = f"{row['method']} on {row['dataset']} @ {row['budget']}: {row['accuracy']:.3f}"
                progress.update(task_id, advance=1, last=last)
                finished[0] += 1
                if not console.is_terminal and finished[0] % step == 0:  # a log gets a line every 5%
                    print(
                        f"{finished[0]}/{len(tasks) - len(known)} runs done; last: {last}",
                        file=sys.stderr,
                        flush=True,
                    )

            rows = bench.run(tasks, jobs=args.jobs, on_done=done, done=known)
    (out / "results.partial.jsonl").unlink()
    (out / "results.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    command = "streamal bench " + " ".join(shlex.quote(a) for a in (args.argv or []))
    summaries = write_report(rows, out, command=command)
    for s in summaries:
        rank = s.ranks.get(s.best_streamal or "", 0.0)
        line = f"budget {s.budget:g}: best streamal {s.best_streamal} (rank {rank:.2f})"
        if s.best_peer:
            line += f", best peer {s.best_peer} (rank {s.ranks[s.best_peer]:.2f})"
        if s.best_streamal and s.baseline:
            gains = s.gain_over_baseline(s.best_streamal)
            line += f", vs random: mean {100 * sum(gains.values()) / len(gains):+.2f} points"
        print(line)
    print(f"wrote {out / 'results.json'} ({len(rows)} runs), {out / 'report.md'} and plots")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from streamal.demo import run_demo

    return run_demo(
        data=args.data,
        budget=args.budget,
        rate=args.rate,
        delay=args.delay,
        out=Path(args.out),
        max_seconds=args.max_seconds,
    )


def build_parser() -> argparse.ArgumentParser:
    from streamal.policies import POLICIES
    from streamal.strategies import STRATEGIES

    parser = argparse.ArgumentParser(prog="streamal", description="Stream-based active learning on Kafka.")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("run", help="run the service (configuration: --config FILE and STREAMAL_* variables)")
    p.add_argument("--config", help="YAML settings file (environment variables override it)")
    p.add_argument(
        "--role",
        default="all",
        choices=["all", "scorer", "learner"],
        help="all (default): one process scores and learns; scorer: one of many that score the samples; "
        "learner: the one that learns from labels and publishes the model (another one waits as a standby)",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "demo", help="embedded broker + service + oracle on a real data set; ends with a summary"
    )
    p.add_argument("--data", default="image_segments", help="built-in data set (default: image_segments)")
    p.add_argument("--budget", type=float, default=0.1)
    p.add_argument("--rate", type=float, default=100.0, help="samples per second sent")
    p.add_argument("--delay", type=float, default=1.0, help="seconds before the oracle answers")
    p.add_argument("--out", default="demo-output", help="folder for the summary and the plot")
    p.add_argument("--max-seconds", type=float, default=150.0, help="hard stop")
    p.set_defaults(func=_cmd_demo)

    def kafka(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap-servers", help="default: STREAMAL_KAFKA__BOOTSTRAP_SERVERS")

    p = sub.add_parser("oracle", help="answer label requests from a labelled file after a delay")
    kafka(p)
    p.add_argument("--data", required=True, help="built-in data set name, or a .csv / .jsonl file")
    p.add_argument("--target", default="label", help="the label column")
    p.add_argument("--id-column", default="id", help="the id column (default: id)")
    p.add_argument("--delay", type=float, default=1.0, help="seconds before answering")
    p.add_argument("--miss-rate", type=float, default=0.0, help="fraction of requests left unanswered")
    p.add_argument("--requests-topic", default="label-requests")
    p.add_argument("--labels-topic", default="labels")
    p.set_defaults(func=_cmd_oracle)

    p = sub.add_parser("record", help="record topics to a JSON-lines file")
    kafka(p)
    p.add_argument("--topic", action="append", required=True, help="topic to record (repeatable)")
    p.add_argument("--out", required=True, help="the JSON-lines file to write")
    p.add_argument("--max-messages", type=int)
    p.add_argument("--idle-seconds", type=float, default=5.0, help="stop after this long without a message")
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep recording past the end offsets seen at start, until --idle-seconds pass without a message "
        "or SIGINT / SIGTERM (which end the recording as complete: exit 0)",
    )
    p.set_defaults(func=_cmd_record)

    p = sub.add_parser(
        "replay",
        help="replay a recorded JSON-lines file into topics, or (--offline) through the service's engine "
        "without Kafka",
    )
    kafka(p)
    p.add_argument("file")
    p.add_argument(
        "--offline",
        action="store_true",
        help="no Kafka: replay the recording through the engine the service builds, on the recording's clock "
        "(the same result every time); with the predictions topic recorded, the run's own decisions, "
        "compared with it (exit 3 when they differ). The whole recording is read into memory (several times "
        "the file's size)",
    )
    p.add_argument(
        "--mode",
        choices=("auto", "faithful", "recorded"),
        help="with --offline: faithful (the run's batches, model versions and clock, from its recorded "
        "predictions: an error without them), recorded (each record at its time), or auto (default: "
        "faithful when the predictions topic is in the recording)",
    )
    p.add_argument("--out", help="with --offline: write summary.json and decisions.jsonl to this folder")
    p.add_argument(
        "--config",
        help="with --offline: the service's YAML settings (model, strategy, policy, topics; STREAMAL_* "
        "variables override it, as for `streamal run`)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="1: as recorded, 2: twice as fast, 0 (default): as fast as possible; at every speed the records "
        "go in timestamp order",
    )
    p.add_argument("--topic-map", action="append", default=[], metavar="OLD=NEW", help="rename a topic")
    p.add_argument("--keep-partitions", action="store_true", help="write to the recorded partitions")
    p.add_argument(
        "--keep-timestamps",
        action="store_true",
        help="give the records their recorded timestamps (default: the time of sending; mind that a topic's "
        "retention counts from a record's timestamp)",
    )
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser(
        "broker",
        help="an embedded Kafka-compatible broker (Tansu, in memory) in the foreground, to try streamal "
        "run on one machine; Ctrl-C stops it",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=_cmd_broker)

    p = sub.add_parser("simulate", help="offline prequential evaluation of one strategy and policy")
    p.add_argument(
        "--data",
        required=True,
        help="built-in data set name, or a .csv / .jsonl file (numeric columns, or a JSON line's features "
        "object as on the samples topic)",
    )
    p.add_argument("--target", default="label", help="the label column")
    p.add_argument("--id-column", default="id")
    p.add_argument("--strategy", default="least_confidence", choices=sorted(STRATEGIES))
    p.add_argument("--policy", default="biqf", choices=sorted(POLICIES))
    p.add_argument("--model", default=None, help="default: knn (committee for the qbc_* strategies)")
    p.add_argument("--budget", type=float, default=0.1)
    p.add_argument(
        "--policy-param",
        action="append",
        metavar="NAME=VALUE",
        help="a parameter of the policy, e.g. warmup=0, or labels_per_hour=60 for rate_limit (repeatable)",
    )
    p.add_argument("--delay", type=int, default=0, help="label delay, in samples (0 or more)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="only the first N samples (N at least 1)")
    p.add_argument(
        "--out",
        default="simulate-output",
        help="folder for summary.json (with labels_used and labels_learned) and the plot",
    )
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser(
        "bench", help="strategies x policies x data sets x budgets x seeds, with the peers; report and plots"
    )
    p.add_argument(
        "--data",
        action="append",
        help="built-in data set or .csv / .jsonl file (repeatable, each named by its file's stem, which must "
        "differ; default: the suite)",
    )
    p.add_argument("--target", default="label", help="the label column of the files")
    p.add_argument("--budget", action="append", type=float, help="repeatable (default: 0.1)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. K-1 (default: 3)")
    p.add_argument("--delay", type=int, default=0, help="label delay, in samples (0 or more)")
    p.add_argument(
        "--limit",
        type=int,
        help="first N samples of each data set, N at least 1 (default: 2000 of a built-in one, all of a "
        "file)",
    )
    p.add_argument(
        "--combo",
        action="append",
        metavar="STRATEGY/POLICY[/MODEL]",
        help="a streamal run, with the strategy's default model or MODEL (repeatable; default: the set)",
    )
    p.add_argument(
        "--model",
        action="append",
        help="run the combinations that name no model with this model instead (repeatable: once per model)",
    )
    p.add_argument(
        "--policy-param",
        action="append",
        metavar="NAME=VALUE",
        help="a parameter for the policies of the streamal runs that take it, e.g. warmup=0, or "
        "labels_per_hour=60 for rate_limit only (repeatable; one no policy of the run takes is an error)",
    )
    p.add_argument(
        "--reuse",
        action="append",
        metavar="RESULTS_JSON",
        help="take scikit-activeml's runs from an earlier results.json instead of running them again (those "
        "of the same data: a row's source is the built-in data set, or the same file, unchanged)",
    )
    p.add_argument("--peer", action="append", help="a peer to run (repeatable; default: all, when installed)")
    p.add_argument("--no-peers", action="store_true", help="run without the peers")
    p.add_argument("--jobs", type=int, help="processes, at least 1 (default: one per core)")
    p.add_argument(
        "--out",
        default="bench-output",
        help="folder for results.json (a row per run: dataset, source, accuracy, labels_used, "
        "labels_learned, ...), report.md and the plots",
    )
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)[1:]
    try:
        with warnings.catch_warnings():
            # a DataWarning (what a data file's loading left out) is one line, "streamal: data: ..."
            shown = warnings.showwarning

            def show(
                message: Warning | str,
                category: type[Warning],
                filename: str,
                lineno: int,
                file: TextIO | None = None,
                line: str | None = None,
            ) -> None:
                if issubclass(category, DataWarning):
                    print(f"streamal: data: {message}", file=sys.stderr, flush=True)
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = show
            code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"streamal: configuration error: {exc}", file=sys.stderr)
        return 2
    except StreamalError as exc:
        print(f"streamal: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
