//! `oxipost._core.sched`: qmgr's scheduler as a Python handle.
//!
//! Batches and events cross as tuples; `oxipost.qmgr.scheduler` gives them
//! names. Nothing here blocks, so the GIL is kept.

#[pyo3::pymodule(submodule)]
pub mod sched {
    use oxipost_core::sched::{self as core, Dsn, Event, Feedback};
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;

    type BatchTuple = (u64, u64, String, String, Vec<u32>);
    type EventTuple = (String, u64, u32, String, String, String, String, f64);

    fn feedback(text: &str) -> PyResult<Feedback> {
        Feedback::parse(text)
            .ok_or_else(|| PyValueError::new_err(format!("bad feedback value: {text:?}")))
    }

    fn result(kind: &str) -> PyResult<core::Result> {
        match kind {
            "sent" => Ok(core::Result::Sent),
            "deferred" => Ok(core::Result::Deferred),
            "bounced" => Ok(core::Result::Bounced),
            _ => Err(PyValueError::new_err(format!("bad result: {kind:?}"))),
        }
    }

    /// Postfix qmgr's scheduler in virtual time (times are seconds, passed in).
    #[pyclass(module = "oxipost._core.sched")]
    pub struct Scheduler(core::Scheduler);

    #[pymethods]
    impl Scheduler {
        #[new]
        #[pyo3(signature = (*, minimal_backoff=300.0, maximal_backoff=4000.0,
                            maximal_queue_lifetime=432000.0, bounce_queue_lifetime=432000.0,
                            delay_warning=0.0))]
        fn new(
            minimal_backoff: f64,
            maximal_backoff: f64,
            maximal_queue_lifetime: f64,
            bounce_queue_lifetime: f64,
            delay_warning: f64,
        ) -> Self {
            Scheduler(core::Scheduler::new(
                core::Params {
                    minimal_backoff,
                    maximal_backoff,
                    maximal_queue_lifetime,
                    bounce_queue_lifetime,
                    delay_warning,
                },
                core::TransportParams::default(),
            ))
        }

        #[pyo3(signature = (*, minimal_backoff, maximal_backoff, maximal_queue_lifetime,
                            bounce_queue_lifetime, delay_warning))]
        fn set_params(
            &mut self,
            minimal_backoff: f64,
            maximal_backoff: f64,
            maximal_queue_lifetime: f64,
            bounce_queue_lifetime: f64,
            delay_warning: f64,
        ) {
            self.0.set_params(core::Params {
                minimal_backoff,
                maximal_backoff,
                maximal_queue_lifetime,
                bounce_queue_lifetime,
                delay_warning,
            });
        }

        #[pyo3(signature = (name, *, concurrency_limit=20, recipient_limit=50, process_limit=100,
                            initial_concurrency=5, positive_feedback="1/concurrency",
                            negative_feedback="1/concurrency", failed_cohort_limit=1.0,
                            deferred=false))]
        #[allow(clippy::too_many_arguments)]
        fn set_transport(
            &mut self,
            name: &str,
            concurrency_limit: u32,
            recipient_limit: u32,
            process_limit: u32,
            initial_concurrency: u32,
            positive_feedback: &str,
            negative_feedback: &str,
            failed_cohort_limit: f64,
            deferred: bool,
        ) -> PyResult<()> {
            let p = core::TransportParams {
                concurrency_limit,
                recipient_limit,
                process_limit,
                initial_concurrency,
                positive_feedback: feedback(positive_feedback)?,
                negative_feedback: feedback(negative_feedback)?,
                failed_cohort_limit,
                deferred,
            };
            self.0.set_transport(name, p);
            Ok(())
        }

        fn recipient_limit(&self, transport: &str) -> u32 {
            self.0.recipient_limit(transport)
        }

        #[pyo3(signature = (msg, arrival, null_sender, rcpts, single_rcpt = false))]
        fn insert(
            &mut self,
            msg: u64,
            arrival: f64,
            null_sender: bool,
            rcpts: Vec<(u32, String, String)>,
            single_rcpt: bool,
        ) {
            self.0
                .insert_message(msg, arrival, null_sender, &rcpts, single_rcpt);
        }

        fn defer_until(
            &mut self,
            msg: u64,
            arrival: f64,
            next_try: f64,
            backoff: f64,
            warned: bool,
        ) {
            self.0.defer_until(msg, arrival, next_try, backoff, warned);
        }

        fn forget(&mut self, msg: u64) {
            self.0.forget(msg);
        }

        fn take_due(&mut self, now: f64) -> Vec<u64> {
            self.0.take_due(now)
        }

        fn next_wakeup(&self) -> Option<f64> {
            self.0.next_wakeup()
        }

        fn flush(&mut self, now: f64) {
            self.0.flush(now);
        }

        fn report_crash(&mut self, batch: u64, now: f64) -> bool {
            self.0.report_crash(batch, now)
        }

        fn throttle_transport(
            &mut self,
            name: &str,
            until: f64,
            status: &str,
            reason: &str,
        ) -> bool {
            self.0
                .throttle_transport(name, until, Dsn::new(status, reason))
        }

        fn unthrottle_transport(&mut self, name: &str) {
            self.0.unthrottle_transport(name);
        }

        fn transport_throttled(&self, name: &str) -> bool {
            self.0.transport_throttled(name)
        }

        fn flush_site(&mut self, now: f64, site: &str, msgs: Vec<u64>) {
            self.0.flush_site(now, site, &msgs);
        }

        fn next_deliveries(&mut self, now: f64, max: usize) -> Vec<BatchTuple> {
            self.0
                .next_deliveries(now, max)
                .into_iter()
                .map(|b| (b.id, b.msg, b.transport, b.queue, b.rcpts))
                .collect()
        }

        #[pyo3(signature = (batch, now, results, site_failure=None))]
        fn report(
            &mut self,
            batch: u64,
            now: f64,
            results: Vec<(u32, String)>,
            site_failure: Option<(String, String)>,
        ) -> PyResult<bool> {
            let rs = results
                .into_iter()
                .map(|(i, k)| Ok((i, result(&k)?)))
                .collect::<PyResult<Vec<_>>>()?;
            let failure = site_failure.map(|(status, reason)| Dsn::new(&status, &reason));
            Ok(self.0.report(batch, now, &rs, failure.as_ref()))
        }

        /// Events as (kind, msg, rcpt, transport, queue, status, reason, time).
        fn drain_events(&mut self) -> Vec<EventTuple> {
            let s = String::new;
            self.0
                .drain_events()
                .into_iter()
                .map(|e| match e {
                    Event::RecipientDeferred {
                        msg,
                        rcpt,
                        transport,
                        queue,
                        dsn,
                    } => (
                        "rcpt_deferred".into(),
                        msg,
                        rcpt,
                        transport,
                        queue,
                        dsn.status,
                        dsn.reason,
                        0.0,
                    ),
                    Event::Done { msg } => ("done".into(), msg, 0, s(), s(), s(), s(), 0.0),
                    Event::Deferred { msg, next_try } => {
                        ("deferred".into(), msg, 0, s(), s(), s(), s(), next_try)
                    }
                    Event::Expired { msg } => ("expired".into(), msg, 0, s(), s(), s(), s(), 0.0),
                    Event::DelayWarning { msg } => {
                        ("delay_warning".into(), msg, 0, s(), s(), s(), s(), 0.0)
                    }
                })
                .collect()
        }

        fn retry_state(&self, msg: u64) -> Option<(f64, f64, bool)> {
            self.0.retry_state(msg)
        }

        fn queue_state(&self, transport: &str, queue: &str) -> Option<(u32, u32, bool)> {
            self.0.queue_state(transport, queue)
        }

        fn active_messages(&self) -> usize {
            self.0.active_messages()
        }

        fn in_flight(&self) -> usize {
            self.0.in_flight()
        }
    }
}
