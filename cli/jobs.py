"""`nnps submit | status | logs | stop | jobs | fetch`: training as Ray jobs.

All of them need only the dashboard's HTTP address (`--address`, else
RAY_API_SERVER_ADDRESS / RAY_ADDRESS, else http://127.0.0.1:8265). Ray's Jobs API runs
any code for whoever reaches it: keep it on loopback or behind token auth and TLS.
"""

from __future__ import annotations

import datetime
import sys
import uuid
from pathlib import Path
from typing import Annotated, Optional

import typer

from nnps.cli.errors import handle_errors
from nnps.cli.formatting import consistency_note, print_json, steps_by_channel
from nnps.cli.options import Dashboard as Address
from nnps.cli.options import JsonOut, command_of
from nnps.core.errors import ClusterError, ConfigError



def _jobs(address: str | None):  # type: ignore[no-untyped-def]
    from nnps.cluster.jobs import Jobs

    return Jobs(address)


def _validate_train_args(args: list[str]) -> None:
    """Parse the train options with `nnps train`'s own parser, so a bad flag fails here."""
    from nnps.cli import train

    ctx = command_of(train.train).make_context("nnps train", list(args))
    for forbidden in ("run_dir", "resume"):
        if ctx.params.get(forbidden) not in (None, False):
            raise ConfigError(f"--{forbidden.replace('_', '-')} is nnps submit's own option, not a train option")
    train.config_from_options(ctx.params)


@handle_errors
def submit(
    ctx: typer.Context,
    address: Address = None,
    run_dir: Annotated[Optional[str], typer.Option(help="Run directory as the cluster sees it; shared storage (s3://...) for multi-node clusters")] = None,
    code: Annotated[str, typer.Option(help="wheel: ship the nnps wheel in the job's runtime env; image: nnps is in the cluster's image")] = "wheel",
    wheel: Annotated[Optional[str], typer.Option(help="A built nnps wheel to ship (default: build one from this checkout)")] = None,
    job_id: Annotated[Optional[str], typer.Option(help="Job id (default: nnps-<time>-<random>)")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job to its end; exit 1 unless it succeeded")] = False,
    json_out: JsonOut = False,
) -> None:  # fmt: skip
    """Submit `nnps train [TRAIN OPTIONS]` (or `sweep [SWEEP OPTIONS]`) to a Ray cluster as a job. They go after
    the submit options."""
    if code not in ("wheel", "image"):
        raise ConfigError(f"--code must be wheel or image, got {code!r}")
    train_args = list(ctx.args)
    command = "sweep" if train_args[:1] == ["sweep"] else "train"
    if command == "sweep":
        from nnps.cli.sweep import validate_args

        train_args = train_args[1:]
        validate_args(train_args)
    else:
        _validate_train_args(train_args)
    from nnps.cluster.jobs import default_job_id

    jobs = _jobs(address)
    jid = job_id or default_job_id()
    # a job id given may have been used before (Ray's ids are unique per cluster): its run directory is new anyway
    rd = run_dir or f"/tmp/nnps-runs/{jid}" + (f"-{uuid.uuid4().hex[:6]}" if job_id else "")
    jobs.submit(train_args, rd, code=code, wheel=wheel, job_id=jid, command=command)
    if json_out and not wait:
        return print_json({"job_id": jid, "run_dir": rd, "address": jobs.address})
    if not json_out:
        print(f"submitted {jid} to {jobs.address}; run directory {rd}")
        print(f"  nnps status {jid} --address {jobs.address}\n  nnps logs {jid} --follow --address {jobs.address}\n"
              f"  nnps fetch {jid} --out results/ --address {jobs.address}")  # fmt: skip
    if wait:
        final = jobs.wait(jid)
        if json_out:
            print_json(final)
        else:
            _print_status(final)
        if final["status"] != "SUCCEEDED":
            raise ClusterError(f"job {jid} {final['status']}: {_reason(final)}")


def _reason(s: dict) -> str:
    """The last line of a failed job's message: nnps's own one-line error, when it has one."""
    lines = (s.get("message") or "").strip().splitlines()
    last = lines[-1] if lines else "no reason given"
    return last[len("error: "):] if last.startswith("error: ") else last


def _hms(seconds: float | None) -> str:
    return str(datetime.timedelta(seconds=int(seconds))) if seconds is not None else "-"


def _print_status(s: dict) -> None:
    p = s.get("progress")
    line = f"{s['job_id']}: {s['status']}"
    if p and p.get("kind") == "sweep":
        best = p.get("best")
        line += f"  sweep: {p['ended']}/{p['trials']} trials ended"
        if best:
            line += f", best so far {best['trial']} validation {best['val_accuracy']:.2%} ({best['config']})"
    elif p:
        line += (f"  epoch {p.get('epoch', '-')}/{p.get('epochs', '-')}  step {p.get('step')}/{p.get('total_steps')}"
                 f"  train cost {p.get('train_cost', float('nan')):.4f}")  # fmt: skip
        if "test_accuracy" in p:
            line += f"  test acc {p['test_accuracy']:.2%}"
        elif "test_r2" in p:
            line += f"  test R^2 {p['test_r2']:.4f}"
        line += f"  {p.get('examples_per_s', 0):,.0f} ex/s  elapsed {_hms(p.get('elapsed'))}"
        if "eta_s" in s:
            line += f"  ETA {_hms(s['eta_s'])}"
        if channels := steps_by_channel(p.get("channels")):
            line += f"  steps by channel ({channels})"
        if mode := consistency_note(p.get("staleness")):
            line += f"  {mode}"
    print(line)
    for f in (p or {}).get("channels", {}).get("fallbacks", []):
        print(f"  from step {f['step']} over {f['to']} instead of {f['from']}: {f['reason']}")
    if s["status"] == "FAILED":
        print(f"  {_reason(s)}")


@handle_errors
def status(
    job_id: Annotated[Optional[str], typer.Argument(metavar="[JOB]", help="A job id; without it, all nnps jobs")] = None,
    address: Address = None,
    json_out: JsonOut = False,
) -> None:
    """Ray's state of a training job and its live progress (epoch, step, cost, accuracy, ex/s, ETA)."""
    jobs = _jobs(address)
    if job_id is None:
        return _list(jobs, json_out)
    s = jobs.status(job_id)
    if json_out:
        print_json(s)
    else:
        _print_status(s)


def _list(jobs, json_out: bool) -> None:  # type: ignore[no-untyped-def]
    rows = [{"job_id": j.submission_id, "status": str(getattr(j.status, "value", j.status)),
             "start_time": j.start_time, "run_dir": (j.metadata or {}).get("run_dir")} for j in jobs.list()]  # fmt: skip
    if json_out:
        return print_json(rows)
    # Plain lines, not a table that fits the terminal: a job id or a run directory is what
    # a user copies into the next command, so neither is ever cut or folded.
    print(f"nnps jobs at {jobs.address}")
    width = max([len("job"), *(len(r["job_id"]) for r in rows)])
    print(f"{'job':<{width}}  {'status':<9}  started")
    for r in rows:
        started = datetime.datetime.fromtimestamp(r["start_time"] / 1000).strftime("%Y-%m-%d %H:%M:%S") if r["start_time"] else "-"
        print(f"{r['job_id']:<{width}}  {r['status']:<9}  {started}")
        print(f"{'':<{width}}  run directory {r['run_dir'] or '-'}")


@handle_errors
def jobs(address: Address = None, json_out: JsonOut = False) -> None:
    """List nnps jobs on the cluster."""
    _list(_jobs(address), json_out)


@handle_errors
def logs(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    address: Address = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Only the progress records, as JSON lines")] = False,
) -> None:
    """Print a job's log as `nnps train` shows it: a line per epoch (progress records as JSON with --json)."""
    from nnps.cli.progress import LogView

    j = _jobs(address)
    view = LogView(json_out)
    for chunk in j.follow(job_id) if follow else [j.logs(job_id)]:
        sys.stdout.write(view.feed(chunk))
        sys.stdout.flush()
    sys.stdout.write(view.feed("\n") if view.pending else "")


@handle_errors
def stop(job_id: Annotated[str, typer.Argument(metavar="JOB")], address: Address = None) -> None:
    """Stop a running job."""
    stopped = _jobs(address).stop(job_id)
    print(f"{job_id}: {'stop requested' if stopped else 'already finished'}")


@handle_errors
def fetch(
    job_id: Annotated[Optional[str], typer.Argument(metavar="[JOB]", help="A job id (its run directory is in its metadata)")] = None,
    out: Annotated[Path, typer.Option(help="Local directory for final.npz, metrics.jsonl, config.json")] = Path("results"),
    run_dir: Annotated[Optional[str], typer.Option(help="Fetch from this run directory (path or URI) instead of a job's")] = None,
    address: Address = None,
) -> None:  # fmt: skip
    """Copy a run's results (final weights, metrics, config) to a local directory."""
    from nnps.cluster.jobs import fetch as fetch_run

    if run_dir is None:
        if job_id is None:
            raise ConfigError("give a JOB or --run-dir")
        run_dir = _jobs(address).status(job_id)["run_dir"]
        if not run_dir:
            raise ClusterError(f"job {job_id} has no run directory in its metadata (not submitted by nnps?)")
    for path in fetch_run(run_dir, out):
        print(path)
