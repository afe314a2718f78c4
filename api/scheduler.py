"""The weekly report job in the API process: APScheduler, cron-style, day and time from the settings.

`STOCKPILOT_REPORT_CRON` is "mon 07:00" (a day of the week or a range such as "mon-fri", and HH:MM) or a
five-field crontab line ("0 7 * * mon"); `STOCKPILOT_REPORT_TIMEZONE` defaults to UTC. The API's lifespan
calls `start_scheduler()` (switch it off with STOCKPILOT_API_SCHEDULER=false). Without the API, the same
job is one cron line:

    0 7 * * 1  cd /srv/stockpilot && .venv/bin/stockpilot report weekly --json >> .stockpilot/report.log 2>&1
"""

from __future__ import annotations

import logging
import re

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from api.report_weekly import ReportSettings
from forecasting.errors import InputError

log = logging.getLogger(__name__)

JOB_ID = "weekly-report"
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY_TIME = re.compile(
    r"^\s*(?P<day>[a-z]{3}(?:\s*[-,]\s*[a-z]{3})*|\*)\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*$", re.I
)


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field with numbers as names: crontab counts 0 (and 7) as Sunday, APScheduler 3
    counts 0 as Monday, so "1-5" becomes "mon-fri" (step values such as */2 are kept)."""
    return re.sub(r"(?<![/\d])\d+", lambda m: WEEKDAYS[int(m.group()) % 7], field)


def cron_trigger(spec: str, timezone: str = "UTC") -> CronTrigger:
    """A CronTrigger from "mon 07:00" or a five-field crontab line; InputError for anything else."""
    match = _DAY_TIME.match(spec or "")
    try:
        if match:
            day = re.sub(r"\s+", "", match["day"]).lower()
            return CronTrigger(
                day_of_week=day, hour=int(match["hour"]), minute=int(match["minute"]), timezone=timezone
            )
        fields = (spec or "").split()
        if len(fields) == 5:
            minute, hour, day, month, weekday = fields
            return CronTrigger(
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=crontab_weekdays(weekday),
                timezone=timezone,
            )
    except (ValueError, LookupError) as exc:
        raise InputError(f"STOCKPILOT_REPORT_CRON {spec!r}: {exc}") from None
    raise InputError(
        f"STOCKPILOT_REPORT_CRON {spec!r}: use 'mon 07:00' or a crontab line such as '0 7 * * mon'"
    )


def run_weekly_report() -> str | None:
    """The scheduled job: write the report of the active run's week; returns its Markdown path. Errors are
    logged, never raised (a failed week must not stop the scheduler)."""
    from api.report_weekly import generate_weekly_report

    try:
        report = generate_weekly_report(progress=lambda message: log.info("weekly report: %s", message))
    except InputError as exc:
        log.warning("weekly report skipped: %s", exc)
        return None
    except Exception:
        log.exception("weekly report failed")
        return None
    log.info("weekly report of %s written to %s", report.as_of.date(), report.paths["markdown"])
    return str(report.paths["markdown"])


def start_scheduler(settings: ReportSettings | None = None, start: bool = True) -> BackgroundScheduler:
    """A background scheduler with the weekly report job on the configured cron trigger (started unless
    `start=False`). One run at a time; a run missed while the process was down runs within an hour."""
    settings = settings or ReportSettings()
    trigger = cron_trigger(settings.report_cron, settings.report_timezone)
    scheduler = BackgroundScheduler(timezone=settings.report_timezone)
    scheduler.add_job(
        run_weekly_report,
        trigger,
        id=JOB_ID,
        name="weekly procurement report",
        replace_existing=True,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
    )
    if start:
        scheduler.start()
        log.info(
            "weekly report scheduled (%s %s): next run %s",
            settings.report_cron,
            settings.report_timezone,
            scheduler.get_job(JOB_ID).next_run_time,
        )
    return scheduler
