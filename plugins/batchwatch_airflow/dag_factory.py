"""Build each model's DAGs from its spec, so that a new model is a new spec file and no code."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param

from batchwatch.monitoring.faults import FAULTS, minimum_days
from batchwatch.spec import LOWER_IS_BETTER, ModelSpec, SpecError, load_specs_and_errors, missing_module
from batchwatch_airflow.operators import (
    BatchPredictOperator,
    ChaosDrillOperator,
    DriftCheckOperator,
    PerformanceCheckOperator,
    PromoteModelOperator,
    PublishShardsOperator,
    RecordApprovalOperator,
    ReleaseDecisionOperator,
    RetentionOperator,
    RollbackOperator,
    ScoreShardOperator,
    TrainModelOperator,
    ValidateModelOperator,
    VolumeCheckOperator,
)
from batchwatch_airflow.spec_errors import spec_error_dag

START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)
# Shown at the end of every model DAG's docs: what is paused when Airflow first sees it, and why.
PAUSED_NOTE = (
    "\n\n**Paused when Airflow first sees it**: its schedule starts only when someone unpauses it (the toggle in "
    "the DAG list, or the Trigger dialog's *Unpause on trigger* box). A run triggered while it is paused waits in "
    "the queue until it is unpaused, and unpausing also schedules its latest interval. To run it once without "
    "starting the schedule: `bin/airflow dags test <dag_id>` runs it in the terminal, printing its logs there."
)
UNPAUSED_NOTE = "\n\n**Not paused**: it has no schedule, so it runs only when triggered, and a trigger runs at once."

log = logging.getLogger(__name__)


# The longest one try of a job's task may run; then Airflow fails the try and retries it. Each is
# well above the work (20M rows score in under 15 minutes) and above the warehouse's statement_timeout
# (BATCHWATCH_PG_STATEMENT_TIMEOUT, 1 h), whose message is clearer, so this one fires only where no
# server-side timeout can: a server that stopped answering, a task stuck outside the database.
EXECUTION_TIMEOUTS = {
    "nightly_predict": timedelta(hours=3),  # the day's retries still end before the daily checks at 06:00
    "hourly_drift": timedelta(minutes=50),  # under the hour: one run at a time, so an overrun holds back the next
    "daily_performance": timedelta(hours=1),
    "weekly_retrain": timedelta(hours=6),
    "release": timedelta(hours=1),  # not the approval: a person has response_timeout to answer
    "rollback": timedelta(minutes=30),
    "chaos_drill": timedelta(hours=4),  # a sandboxed copy and every monitor per fault
}


def default_args(spec: ModelSpec, job: str) -> dict:
    return {
        "owner": spec.owner,
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": EXECUTION_TIMEOUTS[job],
    }


def _model_dag(spec: ModelSpec, *, job: str, tag: str, schedule: str | None, doc_md: str, **arguments) -> DAG:
    """One of a model's DAGs: `<model>_<job>`, its cron on UTC data intervals (or manual only), shared defaults.

    A scheduled DAG starts paused, so nothing runs that nobody asked for; a manual-only one starts
    unpaused, so its first trigger runs instead of queueing behind a pause. Only the DAG file's
    globals register it (no auto-registration), so a spec whose DAGs fail half-way registers none.
    """
    return DAG(
        dag_id=f"{spec.name}_{job}",
        schedule=CronDataIntervalTimetable(schedule, timezone="UTC") if schedule else None,
        start_date=START_DATE,
        catchup=False,
        default_args=default_args(spec, job),
        tags=["batchwatch", tag, *spec.tags],
        is_paused_upon_creation=schedule is not None,
        auto_register=False,
        doc_md=doc_md + (PAUSED_NOTE if schedule else UNPAUSED_NOTE),
        **arguments,
    )


def predictions_asset(spec: ModelSpec) -> Asset:
    return Asset(name=f"{spec.name}_predictions", uri=f"batchwatch://{spec.name}/predictions")


def nightly_predict_dag(spec: ModelSpec) -> DAG:
    """Daily: score the day's source rows with the champion (and the challenger in shadow)."""
    with _model_dag(
        spec,
        job="nightly_predict",
        tag="predict",
        schedule=spec.schedules.nightly_predict,
        description=f"Nightly batch prediction of {spec.name}: {spec.description}",
        doc_md=(
            f"### {spec.name}: nightly batch prediction\n\n{spec.description}\n\n"
            "Scores every row of `" + (spec.source.table or "the source query") + "` whose event time falls in the run's "
            "data interval (one UTC day) with the **champion**, and with the **challenger** as `role='shadow'` when one "
            "exists. Rows failing validation go to `rejected_rows` with a reason; the run fails and writes nothing when "
            f"more than {spec.scoring.max_reject_rate:.0%} are rejected. Re-running a day replaces exactly that day's rows."
            + (f" **{spec.scoring.shards} shards** (`scoring.shards`): each `score_shard` task scores its share of the entities "
               "(by a hash of the key) into a stage of its own, and a failed shard retries alone; `publish` then makes "
               "the shards the day in one transaction." if spec.scoring.shards > 1 else "")
            + (f" **apply_retention** then drops the days older than the last {spec.retention.predictions_days} scored ones (a "
               "PostgreSQL partition at a time, with their rejects), audited in `model_events`." if spec.retention.predictions_days else "")
            + "\n\n"
            "```sql\nSELECT * FROM champion_latest_predictions WHERE model_name = '" + spec.name + "' LIMIT 20;\n```"
        ),
        max_active_runs=4,
        params={
            "chunk_size": Param(spec.scoring.chunk_size, type="integer", minimum=1, description="Rows per streamed chunk."),
        },
    ) as dag:
        shards = spec.scoring.shards
        if shards == 1:
            publish = BatchPredictOperator(
                task_id="predict", model_name=spec.name, chunk_size="{{ params.chunk_size }}", outlets=[predictions_asset(spec)]
            )
        else:
            staged = ScoreShardOperator.partial(
                task_id="score_shard", model_name=spec.name, shards=shards, chunk_size="{{ params.chunk_size }}",
                map_index_template="shard {{ task.shard }} of {{ task.shards }}",  # the Grid's name of each mapped try
            ).expand(shard=list(range(shards)))
            publish = PublishShardsOperator(task_id="publish", model_name=spec.name, shards=shards, outlets=[predictions_asset(spec)])
            staged >> publish
        if spec.retention.predictions_days is not None:
            publish >> RetentionOperator(task_id="apply_retention", model_name=spec.name)
    return dag


def _check_notifiers(spec: ModelSpec) -> None:
    """A notifier that cannot be imported fails the DAG file at parse time, naming the field."""
    for index, notifier in enumerate(spec.drift.notifiers):
        module = missing_module(notifier.class_)
        if module is not None:
            raise SpecError(f"model spec {spec.name}: drift.notifiers.{index}.class: module {module!r} cannot be found on the Python path")


def hourly_drift_dag(spec: ModelSpec) -> DAG:
    """Hourly: the trailing window's features and champion scores against the champion's reference."""
    _check_notifiers(spec)
    with _model_dag(
        spec,
        job="hourly_drift",
        tag="drift",
        schedule=spec.schedules.hourly_drift,
        description=f"Hourly drift check of {spec.name} over the trailing {spec.drift.window_hours} h",
        doc_md=(
            f"### {spec.name}: hourly drift check\n\n"
            f"Each run compares the source rows of the trailing {spec.drift.window_hours} hours (ending at the run's data "
            "interval end) and the champion's scores for them with the reference profile stored when the champion was "
            "registered. A column is drifted only when significant after Benjamini-Hochberg "
            f"(FDR {spec.drift.fdr}) **and** its effect size passes the spec's threshold. The task succeeds when drift "
            "is found: the finding is in its return value, its log, `drift_results` and `alerts`.\n\n"
            "```sql\nSELECT column_name, test, statistic, p_adjusted, effect_size, threshold, verdict\nFROM drift_results\n"
            f"WHERE model_name = '{spec.name}' AND window_end = (SELECT MAX(window_end) FROM drift_results WHERE model_name = '{spec.name}')\n"
            "ORDER BY verdict, column_name, test;\n"
            f"SELECT * FROM alerts WHERE model_name = '{spec.name}' ORDER BY id DESC;\n```"
        ),
        # Incidents open and resolve in window order, so windows are checked one at a time.
        max_active_runs=1,
    ) as dag:
        DriftCheckOperator(task_id="check_drift", model_name=spec.name)
    return dag


def daily_performance_dag(spec: ModelSpec) -> DAG:
    """Daily, at the deadline: the previous day's volume and freshness, its estimated performance, and realized performance
    for every day whose labels have matured."""
    settings = spec.performance
    limits = ", ".join([
        *(f"{m} {'ceiling' if m in LOWER_IS_BETTER else 'floor'} {v:g}" for m, v in settings.floors.items()),
        *(f"{m} at most {v:g} {'above' if m in LOWER_IS_BETTER else 'below'} validation" for m, v in settings.max_drop.items()),
    ]) or "none set"
    with _model_dag(
        spec,
        job="daily_performance",
        tag="performance",
        schedule=spec.schedules.daily_performance,
        description=f"Daily performance (realized and estimated) and volume of {spec.name}",
        doc_md=(
            f"### {spec.name}: daily performance and volume\n\n"
            "Each run checks the UTC day before its data interval end; that end is the day's **deadline**.\n\n"
            "**check_volume** counts the day's source rows against the same weekday of the trailing "
            f"{spec.volume.trailing_weeks} weeks (median and MAD) and reports a day with no rows by the deadline, and rows that "
            "arrived after the nightly run scored their day.\n\n"
            "**check_performance** estimates the day's ROC AUC, precision, recall and more from the champion's calibrated scores "
            f"(confidence-based, before any label), and computes the realized figures of every day of the last {settings.lookback_days} "
            f"whose labels have matured ({spec.label.delay_days:g} days), with {settings.confidence:.0%} intervals; labels that come late "
            f"update their day. A figure is degraded when its whole interval is past a limit ({limits}); the estimate raises an early "
            "warning labelled as estimated. Both open, grow and resolve incidents through the spec's notifiers.\n\n"
            "```sql\nSELECT ds, role, model_version, source, metric, value, lower, upper, estimation_error, rows_labelled, rows_scored\n"
            f"FROM performance_daily WHERE model_name = '{spec.name}' AND metric = 'roc_auc' ORDER BY ds DESC, source;\n"
            f"SELECT * FROM volume_daily WHERE model_name = '{spec.name}' ORDER BY ds DESC;\n```"
        ),
        # Incidents open and resolve in day order.
        max_active_runs=1,
    ) as dag:
        VolumeCheckOperator(task_id="check_volume", model_name=spec.name)
        PerformanceCheckOperator(task_id="check_performance", model_name=spec.name)
    return dag


def champion_asset(spec: ModelSpec) -> Asset:
    return Asset(name=f"{spec.name}_champion", uri=f"batchwatch://{spec.name}/champion")


def weekly_retrain_dag(spec: ModelSpec) -> DAG:
    """Weekly: train a challenger, validate it against the champion, promote it or record why not."""
    gates = spec.retrain.gates
    with _model_dag(
        spec,
        job="weekly_retrain",
        tag="retrain",
        schedule=spec.schedules.weekly_retrain,
        description=f"Weekly retrain -> validate -> promote of {spec.name}",
        doc_md=(
            f"### {spec.name}: weekly retrain, validate, promote\n\n"
            f"**train** fits the spec's estimator on the trailing `training_window_days` of labelled rows whose labels have "
            f"matured ({spec.label.delay_days:g} days) and registers it with the champion as parent. **validate** scores it and "
            f"the champion on the same out-of-time holdout (the most recent {spec.retrain.holdout_fraction:.0%}) and records every "
            f"gate: AUC >= {gates.min_roc_auc}, Brier <= {gates.max_brier}, non-inferiority (paired bootstrap, margin "
            f"{gates.non_inferiority_margin}), sane outputs, every categorical slice within {gates.slice_margin} AUC of the champion, "
            "and agreement in shadow rows when it shadowed. **promote** swaps the champion atomically, or records the "
            "rejection with the failed gates and is skipped.\n\n"
            "Trigger with `dry_run` to change nothing, `candidate_version` to validate a registered version (e.g. a "
            "shadowing challenger) instead of training, and `force_promote` with a `force_reason` to override failed gates.\n\n"
            "```sql\nSELECT created_at, event, version, previous_version, actor, reason FROM model_events\n"
            f"WHERE model_name = '{spec.name}' ORDER BY id;\n```"
        ),
        max_active_runs=1,
        params={
            "dry_run": Param(False, type="boolean", description="Train and validate, but register and promote nothing."),
            "force_promote": Param(False, type="boolean", description="Promote even if gates fail; needs force_reason."),
            # Optional in the form (a null type is what the UI reads as not required), so a plain run is one
            # click; the train task fails at once when force_promote is on without it.
            "force_reason": Param(None, type=["null", "string"], description="Why the gates are overridden (audited); required with force_promote."),
            "training_window_days": Param(
                spec.retrain.training_window_days, type="integer", minimum=1, description="Trailing days of labelled data."
            ),
            "candidate_version": Param(
                None, type=["null", "integer"], minimum=1, description="Validate this registered version instead of training one."
            ),
        },
    ) as dag:
        train = TrainModelOperator(
            task_id="train",
            model_name=spec.name,
            training_window_days="{{ params.training_window_days }}",
            dry_run="{{ params.dry_run }}",
            force_promote="{{ params.force_promote }}",
            force_reason="{{ params.force_reason }}",
            candidate_version="{{ params.candidate_version }}",
        )
        validate = ValidateModelOperator(task_id="validate", model_name=spec.name)
        promote = PromoteModelOperator(
            task_id="promote",
            model_name=spec.name,
            force_promote="{{ params.force_promote }}",
            force_reason="{{ params.force_reason }}",
            outlets=[champion_asset(spec)],
        )
        train >> validate >> promote
    return dag


def release_dag(spec: ModelSpec) -> DAG:
    """Daily: the release under way, judged on real traffic: a canary's ramp (and a person's approval when the spec asks), or
    the guard after a promotion."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    settings = spec.release
    canary = settings.canary
    steps = " -> ".join(f"{share:.0%}" for share in canary.steps)
    with _model_dag(
        spec,
        job="release",
        tag="release",
        schedule=spec.schedules.daily_release,
        description=f"Daily release decision of {spec.name}: canary ramp, approval, guard and rollback",
        doc_md=(
            f"### {spec.name}: daily release decision\n\n"
            f"**Canary** ({'started by the weekly retrain' if canary.enabled else 'off in the spec; start one with bin/batchwatch canary start'}): "
            f"the challenger serves a salted-hash share of entities, {steps} -> promote. Each morning compares the arms on the labels "
            f"matured by then: {canary.primary_metric} must be non-inferior (margin {canary.margin:g}"
            f"{', and superior' if canary.require_superiority else ''}), guardrails {', '.join(canary.guardrails) or 'none'} within their "
            f"margins, with always-valid {1 - canary.alpha:.0%} confidence sequences (any number of daily looks) and at least "
            f"{canary.power:.0%} power before a step passes. A significantly worse challenger is stopped at once (share back to 0, "
            "release incident).\n\n"
            + ("**Approval**: a promotion the canary earned waits in the **approve** task (Airflow's Required Actions) for a person to "
               "approve or reject it with a reason; **record_approval** carries it out, audited.\n\n" if settings.approval else "")
            + f"**Guard**: for {settings.guard_days} days after a promotion the previous champion scores in shadow; a new champion worse by "
            f"more than {settings.guard_margin:g} {canary.primary_metric} is rolled back automatically.\n\n"
            "```sql\nSELECT created_at, event, version, reason FROM model_events\n"
            f"WHERE model_name = '{spec.name}' AND event LIKE 'release%' ORDER BY id DESC;\n"
            f"SELECT * FROM releases WHERE model_name = '{spec.name}' ORDER BY id DESC;\n```"
        ),
        # Looks are taken day after day; a run waiting for approval holds the next ones back.
        max_active_runs=1,
    ) as dag:
        decide = ReleaseDecisionOperator(task_id="decide", model_name=spec.name, approval_task_id="approve" if settings.approval else None)
        if settings.approval:
            approve = HITLOperator(
                task_id="approve",
                subject=f"Promote {spec.name}'s canary challenger to champion?",
                body="{{ ti.xcom_pull(task_ids='decide', key='approval_body') }}",
                options=["Approve", "Reject"],
                # The default must pass its own schema, or the task fails before asking; an empty reason is recorded as such.
                params={"reason": Param("", type="string", description="Why you approve or reject (audited in model_events).")},
                # Under a day: the run holds the next day's runs back while it waits. Unanswered, the task fails, its retries ask
                # again, and the canary holds at its last share meanwhile.
                response_timeout=timedelta(hours=20),
                # Its wait is deferred and bounded by response_timeout; an execution_timeout would count the wait.
                execution_timeout=None,
            )
            decide >> approve >> RecordApprovalOperator(
                task_id="record_approval", model_name=spec.name, approval_task_id="approve", outlets=[champion_asset(spec)]
            )
    return dag


def rollback_dag(spec: ModelSpec) -> DAG:
    """Manual only: make the previous champion (or a named version) champion again."""
    with _model_dag(
        spec,
        job="rollback",
        tag="registry",
        schedule=None,
        description=f"Roll {spec.name}'s champion back (manual)",
        doc_md=(
            f"### {spec.name}: roll back the champion\n\nTrigger with a `reason` (required, audited) and optionally "
            "`to_version`; without it the latest earlier champion that was not itself rolled back from comes back, and the version "
            "rolled back from is marked so the weekly retrain does not promote it again. The next nightly "
            f"run scores with it. Same as `bin/batchwatch rollback {spec.name} --reason ...`."
        ),
        max_active_runs=1,
        params={
            "reason": Param(type="string", minLength=3, description="Why the champion is rolled back (audited)."),
            "to_version": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="Version to restore; default: the latest earlier champion not rolled back from.",
            ),
        },
    ) as dag:
        RollbackOperator(
            task_id="rollback",
            model_name=spec.name,
            to_version="{{ params.to_version }}",
            reason="{{ params.reason }}",
            outlets=[champion_asset(spec)],
        )
    return dag


def chaos_drill_dag(spec: ModelSpec) -> DAG:
    """Manual only: inject known faults into sandboxed copies of a window, run the monitors on each, report what caught what."""
    faults = "".join(f"- `{name}`: {what}\n" for name, what in FAULTS.items())
    with _model_dag(
        spec,
        job="chaos_drill",
        tag="drill",
        schedule=None,
        description=f"Chaos drill of {spec.name}'s monitors (manual)",
        doc_md=(
            f"### {spec.name}: chaos drill of the monitors\n\n"
            "Copies a window of the warehouse (the last `days` scored days, the history the volume check compares them with, "
            "the labels of their predictions, the model's registry rows) into a **sandbox** per fault: a schema of its own on "
            "PostgreSQL, a temporary file on SQLite, dropped afterwards. Each sandbox gets one fault:\n\n"
            f"{faults}\n"
            "Then the real monitors run on it as the DAGs would: the nightly scoring again over a day whose source rows changed, "
            "the hourly drift check from the fault's start, the daily volume and performance checks at each deadline. The "
            "report says which detector caught each fault and how many hours after it began. A **control** sandbox with no "
            "fault runs the same checks and must stay quiet, else the drill is inconclusive.\n\n"
            "The real tables are never written but for the report's row in `drill_reports`, and no notifier is called. The "
            "task fails, after storing the report, when a fault went unseen or the control fired.\n\n"
            f"```sql\nSELECT id, status, window_start, window_end, finished_at, faults\nFROM drill_reports WHERE model_name = '{spec.name}' "
            "ORDER BY id DESC LIMIT 5;\n```"
        ),
        max_active_runs=1,
        # The form's values arrive typed: days an int, faults a list, an empty window_end None.
        render_template_as_native_obj=True,
        params={
            "window_end": Param(
                None, type=["null", "string"], format="date",
                description="The window's last day (UTC, YYYY-MM-DD); empty: the latest day the nightly run scored.",
            ),
            "days": Param(
                minimum_days(spec), type="integer", minimum=1,
                description=f"Days in the window; flipped_labels needs {minimum_days(spec)}, for a day whose labels have matured.",
            ),
            "faults": Param(
                list(FAULTS), type="array", minItems=1, uniqueItems=True, items={"type": "string", "enum": list(FAULTS)},
                examples=list(FAULTS), description="The faults to inject, each in a sandbox of its own.",
            ),
        },
    ) as dag:
        ChaosDrillOperator(
            task_id="drill",
            model_name=spec.name,
            window_end="{{ params.window_end }}",
            days="{{ params.days }}",
            faults="{{ params.faults }}",
        )
    return dag


MODEL_DAGS = (nightly_predict_dag, hourly_drift_dag, daily_performance_dag, weekly_retrain_dag, release_dag, rollback_dag, chaos_drill_dag)


def all_dags() -> list[DAG]:
    """Every model's DAGs, each spec built on its own: a spec that fails to load or build becomes its
    `<name>_spec_error` DAG, and the healthy models keep their schedules."""
    specs, errors = load_specs_and_errors()
    dags = [spec_error_dag(path.stem, message) for path, message in errors.items()]
    for spec in specs.values():
        try:
            built = [build(spec) for build in MODEL_DAGS]
        except Exception as error:  # any failure of one spec's DAGs must leave the other models scheduled
            log.exception("The DAGs of model spec %s cannot be built", spec.name)
            message = str(error) if isinstance(error, SpecError) else f"model spec {spec.name}: {type(error).__name__}: {error}"
            dags.append(spec_error_dag(spec.name, message))
        else:
            dags.extend(built)
    return dags
