from croniter import croniter

from jobs.schedule import PERIODIC_JOBS, build_scheduler, resolve
from portal.queue import QUEUES


def test_every_periodic_job_names_a_job_function_a_queue_and_either_a_valid_cron_or_an_interval():
    for job in PERIODIC_JOBS:
        assert callable(resolve(job.job_name)), job.job_name
        assert job.queue in QUEUES, job
        assert (job.cron is None) != (job.interval is None), job
        assert croniter.is_valid(job.cron) if job.cron else job.interval > 0, job
        assert job.timeout > 0


def test_scheduler_registers_every_periodic_job(app):
    scheduler = build_scheduler(app.extensions["redis"])
    registered = {cron_job.func_name for cron_job in scheduler.get_jobs()}
    assert registered == {job.job_name for job in PERIODIC_JOBS}


def test_the_campaign_tick_does_not_flood_the_log_but_its_errors_show():
    import logging

    from jobs.worker import QuietFrequentJobs

    quiet = QuietFrequentJobs()

    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("rq.worker", level, __file__, 1, message, None, None)

    assert not quiet.filter(record(logging.INFO, "sending: jobs.sending.run_campaigns() (abc)"))
    assert quiet.filter(record(logging.ERROR, "jobs.sending.run_campaigns() failed"))
    assert quiet.filter(record(logging.INFO, "sending: jobs.sending.send_deliveries(7, 0) (abc)"))
    assert not quiet.filter(record(logging.INFO, "Worker w1: sending: Job OK (abc)"))
