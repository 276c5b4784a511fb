"""`python -m batchwatch`: set up a warehouse, fill it with simulated data, bootstrap a champion.

The warehouse URL comes from --warehouse or AIRFLOW_CONN_WAREHOUSE (the Airflow connection the
DAGs use), so the commands and the DAGs always talk to the same database.
"""

from __future__ import annotations

import argparse
import os
import sys

import sqlalchemy as sa

from batchwatch import queries, registry, warehouse
from batchwatch.demo.seed import day_start, simulate_into
from batchwatch.modeling import training
from batchwatch.spec import get_spec


def _engine(args: argparse.Namespace) -> sa.Engine:
    url = args.warehouse or os.environ.get("AIRFLOW_CONN_WAREHOUSE")
    if not url:
        sys.exit("no warehouse: pass --warehouse URL or set AIRFLOW_CONN_WAREHOUSE")
    return warehouse.make_engine(url)


def _cmd_migrate(args: argparse.Namespace) -> None:
    warehouse.migrate(_engine(args))
    print("warehouse schema is at the latest migration")


def _cmd_simulate(args: argparse.Namespace) -> None:
    engine = _engine(args)
    start, end = day_start(args.start), day_start(args.end)
    with engine.connect() as connection:
        existing = connection.execute(
            sa.text("SELECT COUNT(*) FROM transactions WHERE event_time >= :s AND event_time < :e"), {"s": start, "e": end}
        ).scalar_one()
    if existing:
        print(f"transactions already hold {existing} rows in [{start:%Y-%m-%d}, {end:%Y-%m-%d}); not simulating again")
        return
    labels_as_of = day_start(args.labels_as_of) if args.labels_as_of else end
    rows = simulate_into(
        engine, start=start, end=end, rows_per_day=args.rows_per_day, seed=args.seed, malformed_rate=args.malformed_rate, labels_as_of=labels_as_of
    )
    print(f"simulated {rows} transactions in [{start:%Y-%m-%d}, {end:%Y-%m-%d}), labels observed by {labels_as_of:%Y-%m-%d}")


def _cmd_bootstrap(args: argparse.Namespace) -> None:
    engine = _engine(args)
    spec = get_spec(args.model)
    current = registry.alias_version(engine, spec.name, "champion")
    if current is not None and not args.force:
        print(f"{spec.name} already has a champion (v{current}); pass --force to train and promote a new one")
        return
    version = training.bootstrap_champion(engine, spec, start=day_start(args.start), end=day_start(args.end))
    if version == current:
        print(f"{spec.name} v{version} is the same training as the champion: nothing changed (train on another window for a new version)")
        return
    metrics = registry.get_version(engine, spec.name, version)["metrics"]
    print(
        f"registered {spec.name} v{version} as champion: validation ROC AUC {metrics['validation']['roc_auc']:.3f}, "
        f"Brier {metrics['validation']['brier']:.4f}, fit {metrics['fit_seconds']} s"
    )


def _cmd_report(args: argparse.Namespace) -> None:
    """What landed per day: the numbers to compare with each run's summary."""
    engine = _engine(args)
    query = sa.text(
        "SELECT p.ds, p.role, p.model_version, COUNT(*) AS scored, AVG(p.predicted_label) AS positive_rate,"
        " (SELECT COUNT(*) FROM rejected_rows r WHERE r.model_name = p.model_name AND r.ds = p.ds) AS rejected"
        " FROM predictions p WHERE p.model_name = :m GROUP BY p.model_name, p.ds, p.role, p.model_version ORDER BY p.ds, p.role"
    )
    with engine.connect() as connection:
        rows = connection.execute(query, {"m": args.model}).all()
    print(f"{'ds':<12}{'role':<10}{'version':>8}{'scored':>10}{'rejected':>10}{'positive rate':>15}")
    for row in rows:
        print(f"{str(row.ds):<12}{row.role:<10}{row.model_version:>8}{row.scored:>10}{row.rejected:>10}{row.positive_rate:>15.4f}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in [header, *rows])


def _text(value: object, spec: str = "") -> str:
    return "" if value is None else format(value, spec)


def _cmd_versions(args: argparse.Namespace) -> None:
    rows = [
        [str(row.version), ",".join(row.aliases), f"{row.created_at:%Y-%m-%d %H:%M}", _text(row.parent_version), _text(row.holdout_auc, ".4f"),
         _text(row.holdout_brier, ".4f"), _text(row.trained_on.get("rows")),
         f"{str(row.trained_on.get('start', '?'))[:10]}..{str(row.trained_on.get('end', '?'))[:10]}", row.sha256[:12],
         _text(row.rolled_back_at and f"{row.rolled_back_at:%Y-%m-%d %H:%M}")]
        for row in queries.versions(_engine(args), args.model)
    ]
    header = ["version", "alias", "created_at", "parent", "holdout_auc", "holdout_brier", "rows", "window", "sha256", "rolled_back"]
    print(_table(header, rows))


def _cmd_history(args: argparse.Namespace) -> None:
    rows = [
        [str(event.id), f"{event.created_at:%Y-%m-%d %H:%M:%S}", event.event, _text(event.alias), _text(event.version),
         _text(event.previous_version), event.actor, event.reason[:90]]
        for event in queries.alias_history(_engine(args), args.model)
    ]
    print(_table(["id", "created_at", "event", "alias", "version", "previous_version", "actor", "reason"], rows))


def _cmd_rollback(args: argparse.Namespace) -> None:
    import getpass

    from batchwatch.promotion.retrain import rollback

    outcome = rollback(_engine(args), args.model, to_version=args.to, reason=args.reason, actor=f"cli by {getpass.getuser()}")
    print(
        f"{args.model}: champion is v{outcome['version']} again (was v{outcome['previous_champion']}); v{outcome['previous_champion']} "
        "is marked rolled back from, so a retrain will not promote it (or an identical retrained model) unless forced"
    )


def _cmd_canary(args: argparse.Namespace) -> None:
    import getpass
    from datetime import date, datetime, timezone

    from batchwatch.promotion import canary, releases
    from batchwatch.spec import get_spec

    engine, spec, actor = _engine(args), get_spec(args.model), f"cli by {getpass.getuser()}"
    today = date.fromisoformat(args.from_day) if getattr(args, "from_day", None) else datetime.now(timezone.utc).date()
    if args.action == "start":
        release = releases.start_canary(engine, spec, args.version, starts_on=today, actor=actor, reason=args.reason)
        print(f"{args.model}: canary #{release.id} of v{release.version} against v{release.baseline_version}: {release.share:.0%} of entities "
              f"from {today}, then {', '.join(f'{share:.0%}' for share in release.steps[1:]) or 'promotion'} as the daily decision allows")
    elif args.action == "stop":
        outcome = canary.stop_canary(engine, spec, reason=args.reason, actor=actor, today=today)
        print(f"{args.model}: canary #{outcome['release_id']} stopped; the champion serves every entity from {today}")
    else:
        for release in releases.release_history(engine, args.model):
            print(f"#{release.id} {release.kind} v{release.version} vs v{release.baseline_version}: {release.status}, share {release.share:.0%}, "
                  f"from {release.started_on}" + (f"; {release.reason}" if release.reason else ""))


def _cmd_sign(args: argparse.Namespace) -> None:
    signed = registry.sign_versions(_engine(args), args.model)
    print(f"{args.model}: signed " + (", ".join(f"v{version}" for version in signed) if signed else "no version (none unsigned with an intact file)"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bin/batchwatch", description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", help="SQLAlchemy URL (default: $AIRFLOW_CONN_WAREHOUSE)")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply the warehouse migrations").set_defaults(run=_cmd_migrate)

    sim = commands.add_parser("simulate", help="simulate transactions and delayed outcomes into the warehouse")
    sim.add_argument("--start", required=True, help="first UTC day, YYYY-MM-DD")
    sim.add_argument("--end", required=True, help="day after the last, YYYY-MM-DD")
    sim.add_argument("--rows-per-day", type=int, default=20_000)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--malformed-rate", type=float, default=0.005)
    sim.add_argument("--labels-as-of", help="keep only outcomes observed by this day (default: --end)")
    sim.set_defaults(run=_cmd_simulate)

    boot = commands.add_parser("bootstrap", help="train the first champion on the labelled history of [start, end)")
    boot.add_argument("model")
    boot.add_argument("--start", required=True)
    boot.add_argument("--end", required=True)
    boot.add_argument("--force", action="store_true", help="train and promote even if a champion exists")
    boot.set_defaults(run=_cmd_bootstrap)

    report = commands.add_parser("report", help="predictions and rejects per day")
    report.add_argument("model")
    report.set_defaults(run=_cmd_report)

    versions = commands.add_parser("versions", help="registered versions with holdout metrics, lineage, aliases and rollbacks")
    versions.add_argument("model")
    versions.set_defaults(run=_cmd_versions)

    history = commands.add_parser("history", help="the alias audit log: who moved what, when and why")
    history.add_argument("model")
    history.set_defaults(run=_cmd_history)

    back = commands.add_parser(
        "rollback",
        help="take the champion out of service and restore the previous one (or --to VERSION), audited",
        description=(
            "Take the champion out of service and restore an earlier champion, audited in model_events. The version rolled back "
            "from is marked (see `versions`): the weekly retrain's gates refuse to promote it, or a retrained model with the same "
            "artifact sha256, again unless forced (force_promote with a force_reason). Without --to, each rollback goes one step "
            "further back in the champion history, skipping versions rolled back from: with v1 -> v2 -> v3 promoted, two rollbacks "
            "give v2, then v1, and a third fails because nothing earlier is left. --to VERSION restores that version, even one "
            "rolled back from before, and lifts its mark."
        ),
    )
    back.add_argument("model")
    back.add_argument("--to", type=int, metavar="VERSION", help="version to restore (default: the latest earlier champion not rolled back from)")
    back.add_argument("--reason", required=True, help="why; recorded in model_events")
    back.set_defaults(run=_cmd_rollback)

    sign = commands.add_parser(
        "sign",
        help="sign a model's unsigned versions whose files still match their sha256, with $BATCHWATCH_ARTIFACT_KEY",
        description="Run once when a key is introduced: it trusts the sha256 the warehouse holds now. Versions already signed are left alone.",
    )
    sign.add_argument("model")
    sign.set_defaults(run=_cmd_sign)

    canary = commands.add_parser("canary", help="start, stop or list canary releases (the daily <model>_release DAG ramps them)")
    canary_actions = canary.add_subparsers(dest="action", required=True)
    start = canary_actions.add_parser("start", help="let VERSION serve the first step's share of entities, from --from-day (default today, UTC)")
    start.add_argument("model")
    start.add_argument("--version", type=int, required=True)
    start.add_argument("--reason", required=True, help="why; recorded in model_events")
    start.add_argument("--from-day", help="first scored day the arms apply to, YYYY-MM-DD")
    stop = canary_actions.add_parser("stop", help="stop the canary under way: the champion serves every entity again")
    stop.add_argument("model")
    stop.add_argument("--reason", required=True, help="why; recorded in model_events")
    stop.add_argument("--from-day", help="first scored day without arms, YYYY-MM-DD")
    listing = canary_actions.add_parser("list", help="the model's latest releases")
    listing.add_argument("model")
    canary.set_defaults(run=_cmd_canary)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except registry.RegistryError as error:
        parser.exit(2, f"error: {error}\n")
