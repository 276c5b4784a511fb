"""Operators: read templated arguments, resolve the warehouse, call one core function, return its summary."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk import BaseOperator, get_current_context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, AirflowTaskTimeout

from batchwatch.errors import PermanentError
from batchwatch_airflow.connections import artifact_key_into_environment, warehouse_engine
from batchwatch_airflow.links import BatchwatchPageLink, DriftReportLink

if TYPE_CHECKING:
    from airflow.sdk import Context
    from sqlalchemy.engine import Engine


def _unset(value: Any) -> bool:
    """A templated value that is not set renders as "None" or ""."""
    return value in (None, "", "None")


def _moment(value: Any, context: Context) -> datetime:
    """A templated moment. A run triggered without a logical date has no data interval: its run_after stands in."""
    if _unset(value):
        return context["dag_run"].run_after
    return datetime.fromisoformat(str(value))


def _optional_int(value: Any) -> int | None:
    """A templated optional integer param."""
    return None if _unset(value) else int(value)


@contextmanager
def _warehouse(conn_id: str) -> Iterator[Engine]:
    """The task's warehouse engine, and the artifact key. Errors a retry cannot fix fail the task at once; the pool closes after.

    Airflow's own message for an execution_timeout is "Timeout, PID: n"; this one says what likely
    happened and what to change.
    """
    artifact_key_into_environment()
    engine = warehouse_engine(conn_id)
    try:
        yield engine
    except PermanentError as error:
        raise AirflowFailException(str(error)) from error
    except AirflowTaskTimeout as error:
        raise _timed_out() from error
    finally:
        engine.dispose()


def _timed_out() -> AirflowTaskTimeout:
    task = get_current_context()["task"]
    return AirflowTaskTimeout(
        f"{task.task_id} ran past its execution_timeout ({task.execution_timeout}) while using the warehouse, and no warehouse "
        "timeout fired first: the database may have stopped answering (a frozen server or network; look in pg_stat_activity). "
        "The task's retry starts over; if the work has only grown, raise the job's entry in EXECUTION_TIMEOUTS "
        "(plugins/batchwatch_airflow/dag_factory.py)"
    )


class BatchPredictOperator(BaseOperator):
    """Score one data interval of a model's source rows into `predictions` (champion and shadow).

    Re-running replaces the interval's rows exactly; a failure leaves them as they were.
    """

    operator_extra_links = (BatchwatchPageLink(),)
    template_fields: Sequence[str] = ("model_name", "data_interval_start", "data_interval_end", "chunk_size", "warehouse_conn_id")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        model_name: str,
        warehouse_conn_id: str = "warehouse",
        data_interval_start: str = "{{ data_interval_start }}",
        data_interval_end: str = "{{ data_interval_end }}",
        chunk_size: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.warehouse_conn_id = warehouse_conn_id
        self.data_interval_start = data_interval_start
        self.data_interval_end = data_interval_end
        self.chunk_size = chunk_size

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.scoring import predict_interval
        from batchwatch.spec import get_spec

        start, end = _data_interval(self.model_name, self.data_interval_start, self.data_interval_end)
        chunk_size = _optional_int(self.chunk_size)
        self.log.info("Scoring %s rows with event time in [%s, %s)", self.model_name, start, end)
        with _warehouse(self.warehouse_conn_id) as engine:
            summary = predict_interval(
                engine, get_spec(self.model_name), start=start, end=end, run_id=context["run_id"], chunk_size=chunk_size
            )
        _log_day(self.log, summary, start, end)
        return summary


class ScoreShardOperator(BatchPredictOperator):
    """Score one shard of a data interval into its own stage (mapped over `shard`); `publish` makes the shards the day.

    A retry rescores this shard only; the day's predictions do not change until the publish.
    """

    template_fields: Sequence[str] = (*BatchPredictOperator.template_fields, "shard", "shards")

    def __init__(self, *, shard: int, shards: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shard = shard
        self.shards = shards

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.scoring import score_shard
        from batchwatch.spec import get_spec

        start, end = _data_interval(self.model_name, self.data_interval_start, self.data_interval_end)
        shard, shards = int(self.shard), int(self.shards)
        self.log.info("Scoring shard %d of %d of %s rows with event time in [%s, %s)", shard, shards, self.model_name, start, end)
        with _warehouse(self.warehouse_conn_id) as engine:
            summary = score_shard(
                engine, get_spec(self.model_name), start=start, end=end, run_id=context["run_id"], shard=shard, shards=shards,
                chunk_size=_optional_int(self.chunk_size),
            )  # fmt: skip
        self.log.info(
            "Staged shard %d of %d: %d of %d rows scored (%d rejected) at %s rows/s; publish makes the day",
            shard, shards, summary["rows_scored"], summary["rows_read"], summary["rows_rejected"], summary["rows_per_second"],
        )  # fmt: skip
        return summary


class PublishShardsOperator(BatchPredictOperator):
    """Make a data interval's predictions exactly its staged shards, in one transaction (the partition swap)."""

    template_fields: Sequence[str] = (*BatchPredictOperator.template_fields, "shards")

    def __init__(self, *, shards: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shards = shards

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.scoring import publish_shards
        from batchwatch.spec import get_spec

        start, end = _data_interval(self.model_name, self.data_interval_start, self.data_interval_end)
        with _warehouse(self.warehouse_conn_id) as engine:
            summary = publish_shards(engine, get_spec(self.model_name), start=start, end=end, run_id=context["run_id"], shards=int(self.shards))
        self.log.info("Published %d shards in %.1f s", len(summary["shards"]), summary["publish_seconds"])
        _log_day(self.log, summary, start, end)
        return summary


def _data_interval(model_name: str, start: Any, end: Any) -> tuple[datetime, datetime]:
    if _unset(start) or _unset(end):
        raise AirflowFailException(
            f"{model_name}: this run has no data interval (triggered without a logical date); "
            "trigger it with a logical date: a manual run scores the last complete UTC day before it"
        )
    return datetime.fromisoformat(str(start)), datetime.fromisoformat(str(end))


def _log_day(log: Any, summary: dict[str, Any], start: datetime, end: datetime) -> None:
    log.info(
        "Scored %d of %d rows (%d rejected) with %s v%s at %s rows/s; positive rate %s; summary: %s",
        summary["rows_scored"],
        summary["rows_read"],
        summary["rows_rejected"],
        summary["model_name"],
        summary["model_version"],
        summary["rows_per_second"],
        summary["positive_rate"],
        summary,
    )
    if summary["rows_read"] == 0:
        log.warning("No source rows had an event time in [%s, %s): is the feed late or broken? Nothing was scored", start, end)


class DriftCheckOperator(BaseOperator):
    """Compare the trailing window ending at `window_end` with the reference profile of the version champion at its end.

    Drift is a finding, not a failure: the task succeeds, returns the summary (XCom, shown in the UI),
    logs every drifted check and the incident's change (opened, grew, resolved), and calls the spec's notifiers once per change.
    """

    operator_extra_links = (BatchwatchPageLink(), DriftReportLink())
    template_fields: Sequence[str] = ("model_name", "window_end", "warehouse_conn_id")
    ui_color = "#fdebd0"

    def __init__(self, *, model_name: str, warehouse_conn_id: str = "warehouse", window_end: str = "{{ data_interval_end }}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.warehouse_conn_id = warehouse_conn_id
        self.window_end = window_end
        self.checked_window: str | None = None  # the report's window name, for DriftReportLink

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.monitoring.drift import check_window
        from batchwatch.monitoring.incidents import announce
        from batchwatch.monitoring.report import window_key
        from batchwatch.spec import get_spec

        with _warehouse(self.warehouse_conn_id) as engine:
            spec = get_spec(self.model_name)  # inside: a broken spec fails the task at once
            summary = check_window(engine, spec, window_end=_moment(self.window_end, context), run_id=context["run_id"])
            self.log.info(
                "%s v%s, window [%s, %s): %d rows, %d scored; %s (%s)",
                self.model_name, summary["model_version"], summary["window_start"], summary["window_end"],
                summary["rows"], summary["rows_scored"], summary["status"], summary["checks"],
            )
            if summary.get("reason"):
                self.log.warning("No verdict: %s", summary["reason"])
            for line in summary["drifted"]:
                self.log.warning("Drifted: %s", line)
            if summary["incident"]:
                self.log.warning("Drift incident %s: %s", summary["incident"]["status"], summary["incident"]["summary"])
            announce(engine, spec.name, spec_notifiers(spec, context), run_id=context["run_id"])
        self.checked_window = window_key(datetime.fromisoformat(summary["window_end"]))
        return summary

def spec_notifiers(spec: Any, context: Context) -> dict[str, Callable[[dict[str, Any]], None]]:
    """The spec's Airflow notifiers, by their place in the spec, each sending an incident change (of any kind) and its message.

    Airflow's SMTP, Slack-webhook and HTTP notifiers send the core's rendering of the message
    unless the spec's params say otherwise; their connections are the spec's or the providers' defaults.
    """
    from batchwatch.monitoring.messages import render_alert
    from batchwatch.spec import SpecError, resolve
    from batchwatch_airflow.notifiers import message_params

    base_url = _page_base_url(spec)

    def sender(index: int, class_: str, params: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        def send(alert: dict[str, Any]) -> None:
            notifier_class = resolve(class_, f"drift.notifiers.{index}.class")
            try:
                notifier = notifier_class(**{**message_params(notifier_class), **params})
            except TypeError as error:  # a missing or unknown param: no retry can fix it
                raise SpecError(
                    f"model spec {spec.name}: drift.notifiers.{index}.params do not fit {class_}: {error}; fix the params in the spec"
                ) from error
            # An incident change is rendered here; a message already rendered (an approval request) goes as it is.
            rendered = alert if "subject" in alert else {**alert, **render_alert(alert, base_url=base_url)}
            notifier({**context, "batchwatch_alert": rendered})

        return send

    return {
        f"{index}:{notifier.class_}": sender(index, notifier.class_, notifier.params)
        for index, notifier in enumerate(spec.drift.notifiers)
    }


class _DailyCheckOperator(BaseOperator):
    """A daily check of the UTC day before the run's data interval end (its deadline), announcing its incident's changes."""

    operator_extra_links = (BatchwatchPageLink(),)
    template_fields: Sequence[str] = ("model_name", "checked_until", "warehouse_conn_id")

    def __init__(
        self, *, model_name: str, warehouse_conn_id: str = "warehouse", checked_until: str = "{{ data_interval_end }}", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.warehouse_conn_id = warehouse_conn_id
        self.checked_until = checked_until

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.monitoring.incidents import announce, day_due_by
        from batchwatch.spec import get_spec

        until = _moment(self.checked_until, context)
        day = day_due_by(until)
        with _warehouse(self.warehouse_conn_id) as engine:
            spec = get_spec(self.model_name)
            summary = self.check(engine, spec, day, until, context["run_id"])
            if summary.get("incident"):
                self.log.warning("Incident %s: %s", summary["incident"]["status"], summary["incident"]["summary"])
            announce(engine, spec.name, spec_notifiers(spec, context), run_id=context["run_id"])
        return summary

    def check(self, engine: Engine, spec: Any, day: date, until: datetime, run_id: str) -> dict[str, Any]:
        raise NotImplementedError


class PerformanceCheckOperator(_DailyCheckOperator):
    """Estimate the day's performance from calibrated scores, realize every matured day of the lookback with the labels
    observed by the deadline, and open or resolve the performance incident."""

    ui_color = "#e8daef"

    def check(self, engine: Engine, spec: Any, day: date, until: datetime, run_id: str) -> dict[str, Any]:
        from batchwatch.monitoring.performance import check_performance

        self.log.info("Performance of %s: estimating %s and realizing days matured by %s", spec.name, day, until)
        summary = check_performance(engine, spec, day, as_of=until, run_id=run_id).summary(spec.name)
        self.log.info("Estimated %s; realized %s", summary["estimated_days"] or "no day", summary["realized_days"] or "no day")
        for line in summary["degraded"]:
            self.log.warning("Degraded: %s", line)
        return summary


class VolumeCheckOperator(_DailyCheckOperator):
    """Count the day's source rows against the same weekday of the trailing weeks, and the rows that came after scoring."""

    ui_color = "#d5f5e3"

    def check(self, engine: Engine, spec: Any, day: date, until: datetime, run_id: str) -> dict[str, Any]:
        from batchwatch.monitoring.volume import check_volume

        self.log.info("Volume of %s on %s, by the deadline %s", spec.name, day, until)
        summary = check_volume(engine, spec, day, run_id=run_id).summary()
        for line in summary["findings"]:
            self.log.warning("Volume: %s", line)
        return summary


class ChaosDrillOperator(BaseOperator):
    """Inject known faults into sandboxed copies of a window of the warehouse, run the real monitors on each, and report
    which detector caught which fault and how fast (monitoring.drill).

    The report is stored in drill_reports first; then the task fails, naming them, when a fault went unseen or when the
    control sandbox fired on clean data (the drill is then inconclusive). Meant for a DAG rendering params as native
    values: `days` arrives as an int, `faults` as a list, an unset `window_end` as None.
    """

    operator_extra_links = (BatchwatchPageLink(),)
    template_fields: Sequence[str] = ("model_name", "window_end", "days", "faults", "warehouse_conn_id")
    ui_color = "#fadbd8"

    def __init__(
        self,
        *,
        model_name: str,
        days: int | str,
        faults: Sequence[str] | str,
        window_end: str | None = None,
        warehouse_conn_id: str = "warehouse",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name, self.window_end, self.days, self.faults = model_name, window_end, days, faults
        self.warehouse_conn_id = warehouse_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.monitoring.drill import default_window_end, run_drill
        from batchwatch.monitoring.incidents import day_window
        from batchwatch.spec import get_spec

        with _warehouse(self.warehouse_conn_id) as engine:
            spec = get_spec(self.model_name)
            if _unset(self.window_end):
                window_end = default_window_end(engine, spec.name)
            else:  # the form gives the window's last day
                window_end = day_window(date.fromisoformat(str(self.window_end)))[1]
            self.log.info("Chaos drill of %s: %s over the %s days before %s", spec.name, ", ".join(self.faults), self.days, window_end)
            report = run_drill(engine, spec, window_end=window_end, days=self.days, faults=self.faults, run_id=context["run_id"])
        for line in report.lines():
            self.log.info("%s", line)
        failure = report.failure()
        if failure is not None:
            raise AirflowFailException(failure)
        return report.to_dict()


def _page_base_url(spec: Any) -> str:
    """Where alerts link to: the spec's drift.alert_base_url, else Airflow's [api] base_url (its own fallback otherwise)."""
    from airflow.sdk import conf

    return spec.drift.alert_base_url or conf.get("api", "base_url", fallback=None) or "http://localhost:8080"


def _actor(context: Context) -> str:
    """Who changed the registry, for its audit log: this run, and the user who triggered it if any."""
    run = context["dag_run"]
    user = getattr(run, "triggering_user_name", None)
    return f"{run.dag_id}/{run.run_id}" + (f" by {user}" if user else "")


def _flag(value: Any) -> bool:
    """A templated boolean param arrives as text."""
    return str(value).strip().lower() in ("true", "1", "yes")


def _force_reason(force_promote: Any, force_reason: Any) -> str | None:
    """The audited reason of a forced promotion, None when not forced.

    The form leaves force_reason optional so a plain run is one click; forcing without it fails at
    once (a retry cannot supply it) and says what to fill in.
    """
    from batchwatch.promotion.retrain import PromotionRefused, check_force

    if not _flag(force_promote):
        return None
    reason = None if _unset(force_reason) else str(force_reason).strip()
    try:
        check_force(True, reason)
    except PromotionRefused as error:
        raise AirflowFailException(
            f"{error}. Trigger the run again and fill in force_reason (why the failed gates may be overridden), or turn force_promote off"
        ) from error
    return reason


class TrainModelOperator(BaseOperator):
    """Train a challenger on the trailing window's matured labels and register it (not in a dry run).

    With `candidate_version` set, trains nothing: that registered version (e.g. a shadowing
    challenger) is the candidate. Returns the candidate for the validate and promote tasks.
    """

    operator_extra_links = (BatchwatchPageLink(),)
    template_fields: Sequence[str] = (
        "model_name", "as_of", "training_window_days", "dry_run", "force_promote", "force_reason", "candidate_version", "warehouse_conn_id",
    )
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        model_name: str,
        as_of: str = "{{ data_interval_end }}",
        training_window_days: int | str | None = None,
        dry_run: bool | str = False,
        force_promote: bool | str = False,
        force_reason: str | None = None,
        candidate_version: int | str | None = None,
        warehouse_conn_id: str = "warehouse",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name, self.as_of, self.training_window_days = model_name, as_of, training_window_days
        self.dry_run, self.force_promote, self.force_reason = dry_run, force_promote, force_reason
        self.candidate_version, self.warehouse_conn_id = candidate_version, warehouse_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.promotion.retrain import existing_candidate, train_candidate
        from batchwatch.spec import get_spec

        _force_reason(self.force_promote, self.force_reason)  # before any training: a forced run says why
        window, version = _optional_int(self.training_window_days), _optional_int(self.candidate_version)
        as_of, dry_run = _moment(self.as_of, context), _flag(self.dry_run)
        with _warehouse(self.warehouse_conn_id) as engine:
            spec = get_spec(self.model_name)  # inside: a broken spec fails the task at once
            if version is not None:
                candidate = existing_candidate(engine, spec, version, as_of=as_of, window_days=window, dry_run=dry_run)
            else:
                candidate = train_candidate(engine, spec, as_of=as_of, window_days=window, dry_run=dry_run, run_id=context["run_id"])
        self.log.info("Candidate %s v%s (champion v%s): holdout %s", self.model_name, candidate.version, candidate.champion_version,
                      candidate.metrics.get("validation"))
        return candidate.to_dict()


class ValidateModelOperator(BaseOperator):
    """Run every gate of the spec on the candidate from `train_task_id`; return the candidate and the gates."""

    operator_extra_links = (BatchwatchPageLink(),)
    template_fields: Sequence[str] = ("model_name", "warehouse_conn_id")
    ui_color = "#fcf3cf"

    def __init__(self, *, model_name: str, train_task_id: str = "train", warehouse_conn_id: str = "warehouse", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name, self.train_task_id, self.warehouse_conn_id = model_name, train_task_id, warehouse_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.promotion.gates import all_passed
        from batchwatch.promotion.retrain import Candidate, validate_candidate
        from batchwatch.spec import get_spec

        candidate = Candidate.from_dict(context["ti"].xcom_pull(task_ids=self.train_task_id))
        with _warehouse(self.warehouse_conn_id) as engine:
            results = validate_candidate(engine, get_spec(self.model_name), candidate)
        for result in results:
            verdict = {True: "PASS", False: "FAIL", None: "n/a "}[result.passed]
            self.log.info("%s %-40s %s", verdict, result.name, result.detail)
        return {"candidate": candidate.to_dict(), "gates": [r.to_dict() for r in results], "all_passed": all_passed(results)}


class PromoteModelOperator(BaseOperator):
    """Swap the champion to the validated candidate, or record why not; skipped when nothing was promoted.

    A skipped task emits no asset event, so work following the champion asset only runs after a real change.
    """

    operator_extra_links = (BatchwatchPageLink(),)
    template_fields: Sequence[str] = ("model_name", "force_promote", "force_reason", "warehouse_conn_id")
    ui_color = "#fadbd8"

    def __init__(
        self,
        *,
        model_name: str,
        validate_task_id: str = "validate",
        force_promote: bool | str = False,
        force_reason: str | None = None,
        warehouse_conn_id: str = "warehouse",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name, self.validate_task_id, self.warehouse_conn_id = model_name, validate_task_id, warehouse_conn_id
        self.force_promote, self.force_reason = force_promote, force_reason

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.promotion.gates import GateResult
        from batchwatch.promotion.retrain import CHAMPION_CHANGED, Candidate, promote_candidate
        from batchwatch.spec import get_spec

        validated = context["ti"].xcom_pull(task_ids=self.validate_task_id)
        candidate = Candidate.from_dict(validated["candidate"])
        results = [GateResult(**gate) for gate in validated["gates"]]
        force_reason = _force_reason(self.force_promote, self.force_reason)
        today = context["data_interval_end"].date()  # the first scored day a canary or a guard applies to
        with _warehouse(self.warehouse_conn_id) as engine:
            outcome = promote_candidate(engine, get_spec(self.model_name), candidate, results, force_reason=force_reason, actor=_actor(context),
                                        today=today)
        self.log.info("%s", outcome)
        if outcome["decision"] not in CHAMPION_CHANGED:
            context["ti"].xcom_push(key="outcome", value=outcome)
            why = outcome.get("reason") or outcome["failed_gates"]
            raise AirflowSkipException(f"{self.model_name} v{candidate.version} not promoted: {outcome['decision']}: {why}")
        return outcome


class RollbackOperator(BaseOperator):
    """Make the previous champion (or `to_version`) champion again; audited with the reason given."""

    operator_extra_links = (BatchwatchPageLink(),)
    template_fields: Sequence[str] = ("model_name", "to_version", "reason", "warehouse_conn_id")
    ui_color = "#f5b7b1"

    def __init__(
        self,
        *,
        model_name: str,
        to_version: int | str | None = None,
        reason: str = "",
        warehouse_conn_id: str = "warehouse",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name, self.to_version, self.reason, self.warehouse_conn_id = model_name, to_version, reason, warehouse_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.promotion.retrain import rollback

        version = _optional_int(self.to_version)
        with _warehouse(self.warehouse_conn_id) as engine:
            outcome = rollback(engine, self.model_name, to_version=version, reason=self.reason, actor=_actor(context))
        self.log.info("Rolled back %s from v%s to v%s: %s", self.model_name, outcome["previous_champion"], outcome["version"], self.reason)
        return outcome


class ReleaseDecisionOperator(BaseBranchOperator):
    """The day's look at the model's release under way (canary ramp, guard after a promotion), applied and announced.

    A branch: when the canary has earned its promotion and the spec asks for approval, the approval task
    downstream runs; otherwise it is skipped. The look's summary is in XCom under `decision`.
    """

    operator_extra_links = (BatchwatchPageLink(),)
    template_fields: Sequence[str] = ("model_name", "decided_until", "warehouse_conn_id")
    ui_color = "#fdebd0"

    def __init__(
        self, *, model_name: str, approval_task_id: str | None = None, warehouse_conn_id: str = "warehouse",
        decided_until: str = "{{ data_interval_end }}", **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name, self.approval_task_id, self.warehouse_conn_id, self.decided_until = (
            model_name, approval_task_id, warehouse_conn_id, decided_until
        )

    def choose_branch(self, context: Context) -> list[str]:
        from batchwatch.monitoring.incidents import announce
        from batchwatch.promotion import canary
        from batchwatch.promotion.releases import active_release
        from batchwatch.spec import get_spec

        until = _moment(self.decided_until, context)
        with _warehouse(self.warehouse_conn_id) as engine:
            spec = get_spec(self.model_name)
            summary = canary.decide(engine, spec, today=until.date(), as_of=until, run_id=context["run_id"], actor=_actor(context))
            announce(engine, spec.name, spec_notifiers(spec, context), run_id=context["run_id"])
            with engine.connect() as connection:
                waiting = active_release(connection, spec.name)
            body = canary.approval_body(engine, spec, waiting) if waiting is not None and waiting.status == "awaiting_approval" else None
        self.log.info("%s: %s", summary.get("verdict"), summary.get("reason"))
        if summary.get("applied"):
            self.log.warning("Applied: %s", summary["applied"])
        context["ti"].xcom_push(key="decision", value=summary)
        if self.approval_task_id and body is not None:
            context["ti"].xcom_push(key="approval_body", value=body)
            if summary.get("verdict") == "promote" and not summary.get("rerun"):  # asked once, when the canary earns it
                self._ask(spec, context, summary)
            return [self.approval_task_id]
        return []

    def _ask(self, spec: Any, context: Context, look: dict[str, Any]) -> None:
        """Tell the spec's notifiers that a person is needed, with the tests and the link to Airflow's Required Actions."""
        from batchwatch.monitoring.messages import render_approval_request

        base_url = _page_base_url(spec).rstrip("/")
        run_id = quote(context["run_id"], safe="")
        required_actions = f"{base_url}/dags/{context['dag'].dag_id}/runs/{run_id}/tasks/{self.approval_task_id}/required_actions"
        message = render_approval_request(look, model_name=spec.name, required_actions=required_actions, base_url=base_url)
        for name, send in spec_notifiers(spec, context).items():
            self.log.info("Asking for approval through %s", name)
            send(message)


class RecordApprovalOperator(BaseOperator):
    """Carry out a person's answer to a canary waiting for approval: promote it, or end it rejected; audited with who and why."""

    operator_extra_links = (BatchwatchPageLink(),)
    template_fields: Sequence[str] = ("model_name", "decided_until", "warehouse_conn_id")

    def __init__(
        self, *, model_name: str, approval_task_id: str, warehouse_conn_id: str = "warehouse", decided_until: str = "{{ data_interval_end }}",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name, self.approval_task_id, self.warehouse_conn_id, self.decided_until = (
            model_name, approval_task_id, warehouse_conn_id, decided_until
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.promotion import canary
        from batchwatch.spec import get_spec

        answer = context["ti"].xcom_pull(task_ids=self.approval_task_id) or {}
        responder = answer.get("responded_by_user") or {}
        who = responder.get("name") or responder.get("id") or "unknown user"
        approved = "Approve" in (answer.get("chosen_options") or [])
        reason = str((answer.get("params_input") or {}).get("reason") or "").strip() or "no reason given"
        with _warehouse(self.warehouse_conn_id) as engine:
            outcome = canary.resolve_approval(engine, get_spec(self.model_name), approved=approved, reason=reason,
                                              actor=f"{who} in the Airflow UI ({_actor(context)})", today=_moment(self.decided_until, context).date())
        self.log.info("%s", outcome["applied"])
        return outcome


class RetentionOperator(BaseOperator):
    """Drop the model's predictions (and rejects) older than the spec's retention, audited in model_events."""

    operator_extra_links = (BatchwatchPageLink(),)
    template_fields: Sequence[str] = ("model_name", "scored_day", "warehouse_conn_id")

    def __init__(
        self, *, model_name: str, warehouse_conn_id: str = "warehouse", scored_day: str = "{{ data_interval_start }}", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.model_name, self.warehouse_conn_id, self.scored_day = model_name, warehouse_conn_id, scored_day

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.scoring.retention import apply_retention
        from batchwatch.spec import get_spec

        with _warehouse(self.warehouse_conn_id) as engine:
            outcome = apply_retention(engine, get_spec(self.model_name), scored_day=_moment(self.scored_day, context).date(),
                                      actor=_actor(context))
        self.log.info("%s", outcome)
        return outcome
