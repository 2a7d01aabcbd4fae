//! qmgr's scheduler: which recipients go to which delivery agent, when.
//!
//! Postfix's qmgr(8) semantics (SCHEDULER_README). Mail is grouped into
//! destination queues named `transport:nexthop`. Each queue has a concurrency
//! window that starts at `initial_destination_concurrency`, grows by positive
//! feedback after deliveries that did not fail at the site level, up to
//! `<transport>_destination_concurrency_limit`, shrinks by negative feedback
//! after site failures, and after `..._failed_cohort_limit` failed cohorts the
//! destination is declared dead: its pending mail is deferred at once without
//! tying up delivery slots, until `minimal_backoff_time` has passed.
//! Recipients of one message to one queue travel together, at most
//! `<transport>_destination_recipient_limit` per delivery. Destinations within
//! a transport and transports themselves are served round-robin, so a huge
//! destination never starves a small one; each transport is capped at its
//! process limit (master.cf maxproc). A message with deferred recipients
//! retries after a delay equal to the time it has been queued, within
//! `minimal_backoff_time`..`maximal_backoff_time` (so each retry about doubles
//! its age); past `maximal_queue_lifetime`
//! (`bounce_queue_lifetime` for null-sender mail) it expires and bounces;
//! past `delay_warning_time` a delay notice goes out once. `defer_transports`
//! hold a transport's mail until a flush. A transport whose delivery agent
//! cannot be reached is throttled (Postfix's qmgr_transport_throttle): its
//! waiting mail, and mail that arrives for it, is deferred without an attempt
//! until the caller's retry time (`transport_retry_time`), a delivery through
//! it that went well, or a flush.
//!
//! Time is always an argument (seconds, f64): nothing here reads a clock, so
//! the tests and capacity simulations run in virtual time.
//!
//! The verb set works on integer message IDs and recipient indexes (the
//! caller keeps the queue IDs and addresses): `insert`, `next_deliveries`,
//! `report`, `take_due`, `next_wakeup`, `flush`, `flush_site`, `drain_events`.

use std::collections::{HashMap, VecDeque};

/// How one feedback step is sized: Postfix's `1/concurrency` or a constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Feedback {
    /// `value/concurrency`: the window moves by about `value` per window's
    /// worth of deliveries.
    PerConcurrency(f64),
    Constant(f64),
}

impl Feedback {
    /// Parses Postfix's syntax: `1/concurrency`, `1/8`, `0.5`, `1`.
    pub fn parse(text: &str) -> Option<Feedback> {
        let t = text.trim();
        if let Some((num, den)) = t.split_once('/') {
            let n: f64 = num.trim().parse().ok()?;
            let den = den.trim();
            if den == "concurrency" {
                return Some(Feedback::PerConcurrency(n));
            }
            let d: f64 = den.parse().ok()?;
            if d <= 0.0 {
                return None;
            }
            return Some(Feedback::Constant(n / d));
        }
        t.parse().ok().map(Feedback::Constant)
    }

    fn value(self, window: u32) -> f64 {
        match self {
            Feedback::PerConcurrency(v) => v / f64::from(window.max(1)),
            Feedback::Constant(v) => v,
        }
    }
}

/// One transport's limits (master.cf service + `<transport>_*` parameters).
#[derive(Clone, Debug)]
pub struct TransportParams {
    pub concurrency_limit: u32,
    pub recipient_limit: u32,
    /// master.cf maxproc; 0 means no limit.
    pub process_limit: u32,
    pub initial_concurrency: u32,
    pub positive_feedback: Feedback,
    pub negative_feedback: Feedback,
    /// Failed cohorts before a destination is dead; 0 disables.
    pub failed_cohort_limit: f64,
    /// Listed in `defer_transports`: hold until flushed.
    pub deferred: bool,
}

impl Default for TransportParams {
    fn default() -> Self {
        TransportParams {
            concurrency_limit: 20,
            recipient_limit: 50,
            process_limit: 100,
            initial_concurrency: 5,
            positive_feedback: Feedback::PerConcurrency(1.0),
            negative_feedback: Feedback::PerConcurrency(1.0),
            failed_cohort_limit: 1.0,
            deferred: false,
        }
    }
}

/// Queue-wide timers, in seconds.
#[derive(Clone, Debug)]
pub struct Params {
    pub minimal_backoff: f64,
    pub maximal_backoff: f64,
    pub maximal_queue_lifetime: f64,
    pub bounce_queue_lifetime: f64,
    /// 0 disables delay notices.
    pub delay_warning: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            minimal_backoff: 300.0,
            maximal_backoff: 4000.0,
            maximal_queue_lifetime: 5.0 * 86400.0,
            bounce_queue_lifetime: 5.0 * 86400.0,
            delay_warning: 0.0,
        }
    }
}

/// What one delivery did for one recipient.
#[derive(Clone, Debug, PartialEq)]
pub enum Result {
    Sent,
    Deferred,
    Bounced,
}

/// One delivery request: recipients of one message for one destination.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub id: u64,
    pub msg: u64,
    pub transport: String,
    /// The destination queue name (`nexthop`, or the recipient when the
    /// recipient limit is 1).
    pub queue: String,
    pub rcpts: Vec<u32>,
}

/// Why mail is deferred without an attempt, as Postfix's qmgr keeps it
/// (its DSN): the enhanced status and the text the deferral is logged with.
#[derive(Clone, Debug, PartialEq)]
pub struct Dsn {
    pub status: String,
    pub reason: String,
}

impl Dsn {
    pub fn new(status: &str, reason: &str) -> Self {
        Dsn {
            status: status.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Things the caller must act on (log, write to the queue file, bounce).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A recipient deferred without a delivery attempt (dead destination,
    /// held transport): log `dsn=status, status=deferred (reason)` and keep
    /// it queued.
    RecipientDeferred {
        msg: u64,
        rcpt: u32,
        transport: String,
        queue: String,
        dsn: Dsn,
    },
    /// Every recipient is sent or bounced: remove the queue file.
    Done { msg: u64 },
    /// Some recipients are deferred: the message waits until `next_try`.
    Deferred { msg: u64, next_try: f64 },
    /// Deferred recipients outlived the queue lifetime: bounce them, remove.
    Expired { msg: u64 },
    /// Send the delay notice for this message (once).
    DelayWarning { msg: u64 },
}

#[derive(Debug)]
struct Message {
    arrival: f64,
    null_sender: bool,
    pending: u32,
    any_deferred: bool,
    flushing: bool,
}

#[derive(Debug)]
struct Retry {
    arrival: f64,
    next_try: f64,
    backoff: f64,
    warned: bool,
    flush: bool,
}

#[derive(Debug)]
struct Entry {
    msg: u64,
    rcpts: Vec<u32>,
}

#[derive(Debug)]
struct Queue {
    todo: VecDeque<Entry>,
    active: u32,
    window: u32,
    success: f64,
    failure: f64,
    fail_cohorts: f64,
    /// Dead until this time, with what its mail is deferred with: the site
    /// failure that killed it (Postfix's queue->dsn).
    dead: Option<(f64, Dsn)>,
    /// Listed in its transport's rotation.
    in_rotation: bool,
}

#[derive(Debug)]
struct Transport {
    params: TransportParams,
    busy: u32,
    queues: HashMap<String, Queue>,
    /// Round-robin order of queue names that have (or may have) work.
    rotation: VecDeque<String>,
    /// Throttled until this time, with what its mail is deferred with.
    throttled: Option<(f64, Dsn)>,
}

#[derive(Debug)]
struct InFlight {
    msg: u64,
    transport: String,
    queue: String,
    rcpts: Vec<u32>,
}

/// The scheduler state; see the module documentation.
#[derive(Debug, Default)]
pub struct Scheduler {
    params: Params,
    default_transport: TransportParams,
    transports: HashMap<String, Transport>,
    transport_rotation: VecDeque<String>,
    messages: HashMap<u64, Message>,
    retry: HashMap<u64, Retry>,
    in_flight: HashMap<u64, InFlight>,
    next_batch: u64,
    events: Vec<Event>,
}

impl Scheduler {
    pub fn new(params: Params, default_transport: TransportParams) -> Self {
        Scheduler {
            params,
            default_transport,
            ..Default::default()
        }
    }

    /// Replaces the timers (reload); queued state is kept.
    pub fn set_params(&mut self, params: Params) {
        self.params = params;
    }

    /// Sets one transport's limits (reload keeps its queues and windows,
    /// clamped to the new limit).
    pub fn set_transport(&mut self, name: &str, params: TransportParams) {
        let t = self.transport_mut(name);
        for q in t.queues.values_mut() {
            q.window = q.window.min(params.concurrency_limit.max(1));
        }
        t.params = params;
    }

    fn transport_mut(&mut self, name: &str) -> &mut Transport {
        if !self.transports.contains_key(name) {
            self.transports.insert(
                name.to_string(),
                Transport {
                    params: self.default_transport.clone(),
                    busy: 0,
                    queues: HashMap::new(),
                    rotation: VecDeque::new(),
                    throttled: None,
                },
            );
            self.transport_rotation.push_back(name.to_string());
        }
        self.transports.get_mut(name).expect("inserted above")
    }

    /// The recipient limit of `transport` (callers use 1 to key queues by
    /// recipient, as Postfix does).
    pub fn recipient_limit(&self, transport: &str) -> u32 {
        self.transports
            .get(transport)
            .map_or(&self.default_transport, |t| &t.params)
            .recipient_limit
    }

    /// Brings a message into the active set with its recipients, each as
    /// `(index, transport, queue)`. A message seen before keeps its retry
    /// state (backoff, delay notice sent).
    pub fn insert(
        &mut self,
        msg: u64,
        arrival: f64,
        null_sender: bool,
        rcpts: &[(u32, String, String)],
    ) {
        self.insert_message(msg, arrival, null_sender, rcpts, false);
    }

    /// `insert`, each recipient in a delivery of its own when `single_rcpt`
    /// whatever the transport's recipient limit: a VERP message, whose
    /// sender differs per recipient (Postfix's qmgr `single_rcpt`).
    pub fn insert_message(
        &mut self,
        msg: u64,
        arrival: f64,
        null_sender: bool,
        rcpts: &[(u32, String, String)],
        single_rcpt: bool,
    ) {
        let flushing = self.retry.get(&msg).is_some_and(|r| r.flush);
        if let Some(r) = self.retry.get_mut(&msg) {
            r.next_try = f64::INFINITY;
            r.flush = false;
        }
        self.messages.insert(
            msg,
            Message {
                arrival,
                null_sender,
                pending: rcpts.len() as u32,
                any_deferred: false,
                flushing,
            },
        );
        // Group by destination, keeping first-seen order of destinations.
        let mut order: Vec<(String, String)> = Vec::new();
        let mut groups: HashMap<(String, String), Vec<u32>> = HashMap::new();
        for (idx, transport, queue) in rcpts {
            let key = (transport.clone(), queue.clone());
            groups.entry(key.clone()).or_default().push(*idx);
            if groups[&key].len() == 1 {
                order.push(key);
            }
        }
        for key in order {
            let all = groups.remove(&key).expect("grouped above");
            let (tname, qname) = key;
            let t = self.transport_mut(&tname);
            let limit = if single_rcpt {
                1
            } else {
                t.params.recipient_limit.max(1) as usize
            };
            let initial = t
                .params
                .initial_concurrency
                .clamp(1, t.params.concurrency_limit.max(1));
            let q = t.queues.entry(qname.clone()).or_insert_with(|| Queue {
                todo: VecDeque::new(),
                active: 0,
                window: initial,
                success: 0.0,
                failure: 0.0,
                fail_cohorts: 0.0,
                dead: None,
                in_rotation: false,
            });
            for chunk in all.chunks(limit) {
                q.todo.push_back(Entry {
                    msg,
                    rcpts: chunk.to_vec(),
                });
            }
            if !q.in_rotation {
                q.in_rotation = true;
                t.rotation.push_back(qname);
            }
        }
        if rcpts.is_empty() {
            self.finish_message(msg, arrival);
        }
    }

    /// Registers a message that sits in the deferred queue (e.g. found by a
    /// startup scan) so `take_due` returns it at `next_try`.
    pub fn defer_until(
        &mut self,
        msg: u64,
        arrival: f64,
        next_try: f64,
        backoff: f64,
        warned: bool,
    ) {
        self.retry.insert(
            msg,
            Retry {
                arrival,
                next_try,
                backoff,
                warned,
                flush: false,
            },
        );
    }

    /// Forgets a message (removed from the queue by the administrator).
    pub fn forget(&mut self, msg: u64) {
        self.retry.remove(&msg);
        self.messages.remove(&msg);
        for t in self.transports.values_mut() {
            for q in t.queues.values_mut() {
                q.todo.retain(|e| e.msg != msg);
            }
        }
    }

    /// Deferred messages whose retry time has come; the caller re-reads
    /// them and calls `insert`.
    pub fn take_due(&mut self, now: f64) -> Vec<u64> {
        let mut due: Vec<(f64, u64)> = self
            .retry
            .iter()
            .filter(|(id, r)| r.next_try <= now && !self.messages.contains_key(id))
            .map(|(id, r)| (r.next_try, *id))
            .collect();
        due.sort_by(|a, b| a.partial_cmp(b).expect("finite times"));
        for (_, id) in &due {
            if let Some(r) = self.retry.get_mut(id) {
                r.next_try = f64::INFINITY;
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// The earliest time something becomes due (a deferred message's retry,
    /// a dead destination's revival), if any.
    pub fn next_wakeup(&self) -> Option<f64> {
        let retry = self
            .retry
            .iter()
            .filter(|(id, _)| !self.messages.contains_key(id))
            .map(|(_, r)| r.next_try)
            .filter(|t| t.is_finite());
        let dead = self
            .transports
            .values()
            .flat_map(|t| t.queues.values())
            .filter_map(|q| q.dead.as_ref().map(|d| d.0));
        let throttled = self
            .transports
            .values()
            .filter_map(|t| t.throttled.as_ref().map(|d| d.0));
        retry.chain(dead).chain(throttled).reduce(f64::min)
    }

    /// Throttles a transport whose delivery agent cannot be reached, until
    /// `until` (Postfix's qmgr_transport_throttle): its mail waiting or yet to
    /// come is deferred with `dsn`, without an attempt. A throttled
    /// transport keeps its first DSN and time; returns whether it was not
    /// throttled before.
    pub fn throttle_transport(&mut self, name: &str, until: f64, dsn: Dsn) -> bool {
        let t = self.transport_mut(name);
        if t.throttled.is_some() {
            return false;
        }
        t.throttled = Some((until, dsn));
        // Its destinations with waiting mail are visited (and emptied) by the next pick.
        for (qname, q) in t.queues.iter_mut() {
            if !q.todo.is_empty() && !q.in_rotation {
                q.in_rotation = true;
                t.rotation.push_back(qname.clone());
            }
        }
        true
    }

    /// Ends a transport's throttle: its agent worked, or the retry time came.
    pub fn unthrottle_transport(&mut self, name: &str) {
        if let Some(t) = self.transports.get_mut(name) {
            t.throttled = None;
        }
    }

    /// Whether `name` is throttled now.
    pub fn transport_throttled(&self, name: &str) -> bool {
        self.transports
            .get(name)
            .is_some_and(|t| t.throttled.is_some())
    }

    /// `postqueue -f`: every deferred message is due now, held transports
    /// deliver for this run, dead destinations get another chance.
    pub fn flush(&mut self, now: f64) {
        for r in self.retry.values_mut() {
            if r.next_try.is_finite() {
                r.next_try = now;
            }
            r.flush = true;
        }
        for m in self.messages.values_mut() {
            m.flushing = true;
        }
        for t in self.transports.values_mut() {
            t.throttled = None;
            for q in t.queues.values_mut() {
                q.dead = None;
                q.fail_cohorts = 0.0;
            }
        }
    }

    /// `postqueue -s site` / ETRN: like `flush`, for the given messages
    /// (the caller knows which queue files hold mail for the site) and the
    /// destination queues named `site` (any transport).
    pub fn flush_site(&mut self, now: f64, site: &str, msgs: &[u64]) {
        for id in msgs {
            if let Some(r) = self.retry.get_mut(id) {
                if r.next_try.is_finite() {
                    r.next_try = now;
                }
                r.flush = true;
            }
            if let Some(m) = self.messages.get_mut(id) {
                m.flushing = true;
            }
        }
        let site = site.to_ascii_lowercase();
        for t in self.transports.values_mut() {
            for (name, q) in t.queues.iter_mut() {
                if name.to_ascii_lowercase() == site {
                    q.dead = None;
                    q.fail_cohorts = 0.0;
                }
            }
        }
    }

    /// Picks up to `max` deliveries that may start now, round-robin over
    /// transports and over each transport's destinations.
    pub fn next_deliveries(&mut self, now: f64, max: usize) -> Vec<Batch> {
        // Expired throttles end here, even for a transport with no mail waiting, so that
        // next_wakeup never names a time already past.
        for t in self.transports.values_mut() {
            if t.throttled.as_ref().is_some_and(|(until, _)| now >= *until) {
                t.throttled = None;
            }
        }
        let mut out = Vec::new();
        let mut idle_rounds = 0;
        let ntrans = self.transport_rotation.len();
        while out.len() < max && ntrans > 0 && idle_rounds < ntrans {
            let tname = self
                .transport_rotation
                .pop_front()
                .expect("rotation non-empty");
            self.transport_rotation.push_back(tname.clone());
            match self.pick_one(&tname, now) {
                Some(b) => {
                    idle_rounds = 0;
                    out.push(b);
                }
                None => idle_rounds += 1,
            }
        }
        out
    }

    /// One delivery from transport `tname`, or None when it has no room or
    /// no eligible destination. Held and dead destinations are emptied into
    /// deferrals on the way.
    fn pick_one(&mut self, tname: &str, now: f64) -> Option<Batch> {
        let mut deferrals: Vec<(u64, Vec<u32>, String, Dsn)> = Vec::new();
        let picked = {
            let t = self.transports.get_mut(tname)?;
            let mut found = None;
            let n = t.rotation.len();
            for _ in 0..n {
                if t.params.process_limit > 0 && t.busy >= t.params.process_limit {
                    break;
                }
                let qname = t.rotation.pop_front().expect("n > 0");
                let initial = t
                    .params
                    .initial_concurrency
                    .clamp(1, t.params.concurrency_limit.max(1));
                let held = t.params.deferred;
                let throttled = t.throttled.as_ref().map(|(_, dsn)| dsn.clone());
                let q = t.queues.get_mut(&qname).expect("rotation names a queue");
                if let Some((until, _)) = &q.dead {
                    if now >= *until {
                        q.dead = None;
                        q.fail_cohorts = 0.0;
                        q.window = initial;
                    }
                }
                // Throttled transports, dead destinations and held transports: defer
                // without a slot.
                if let Some(dsn) = throttled {
                    for e in q.todo.drain(..) {
                        deferrals.push((e.msg, e.rcpts, qname.clone(), dsn.clone()));
                    }
                } else if let Some((_, dsn)) = &q.dead {
                    for e in q.todo.drain(..) {
                        deferrals.push((e.msg, e.rcpts, qname.clone(), dsn.clone()));
                    }
                } else if held {
                    let msgs = &self.messages;
                    let mut keep = VecDeque::new();
                    for e in q.todo.drain(..) {
                        if msgs.get(&e.msg).is_some_and(|m| m.flushing) {
                            keep.push_back(e);
                        } else {
                            // Postfix's qmgr_message_resolve for defer_transports.
                            deferrals.push((
                                e.msg,
                                e.rcpts,
                                qname.clone(),
                                Dsn::new("4.3.2", "deferred transport"),
                            ));
                        }
                    }
                    q.todo = keep;
                }
                if q.todo.is_empty() {
                    // Leaves the rotation; insert puts it back.
                    q.in_rotation = false;
                    continue;
                }
                if q.active >= q.window {
                    t.rotation.push_back(qname);
                    continue;
                }
                let e = q.todo.pop_front().expect("non-empty");
                q.active += 1;
                t.busy += 1;
                if q.todo.is_empty() {
                    q.in_rotation = false;
                } else {
                    t.rotation.push_back(qname.clone());
                }
                found = Some((e, qname));
                break;
            }
            found
        };
        for (msg, rcpts, queue, dsn) in deferrals {
            for rcpt in rcpts {
                self.events.push(Event::RecipientDeferred {
                    msg,
                    rcpt,
                    transport: tname.to_string(),
                    queue: queue.clone(),
                    dsn: dsn.clone(),
                });
                self.account(msg, &Result::Deferred, now);
            }
        }
        let (e, queue) = picked?;
        self.next_batch += 1;
        let id = self.next_batch;
        self.in_flight.insert(
            id,
            InFlight {
                msg: e.msg,
                transport: tname.to_string(),
                queue: queue.clone(),
                rcpts: e.rcpts.clone(),
            },
        );
        Some(Batch {
            id,
            msg: e.msg,
            transport: tname.to_string(),
            queue,
            rcpts: e.rcpts,
        })
    }

    /// Records a finished delivery. `results` gives each recipient's result
    /// (recipients of the batch left out count as deferred); `site_failure`
    /// says the destination itself failed (connection refused, greeting
    /// 4xx...), which feeds the negative feedback and may kill it: its mail
    /// is then deferred with that failure's status and "delivery temporarily
    /// suspended: " before its text, as Postfix's qmgr_deliver_update.
    pub fn report(
        &mut self,
        batch: u64,
        now: f64,
        results: &[(u32, Result)],
        site_failure: Option<&Dsn>,
    ) -> bool {
        let Some(f) = self.in_flight.remove(&batch) else {
            return false;
        };
        if let Some(t) = self.transports.get_mut(&f.transport) {
            t.busy = t.busy.saturating_sub(1);
            let p = t.params.clone();
            if let Some(q) = t.queues.get_mut(&f.queue) {
                q.active = q.active.saturating_sub(1);
                match site_failure {
                    None => {
                        // Positive feedback (Postfix qmgr_queue_unthrottle).
                        if q.window < p.concurrency_limit {
                            q.success += p.positive_feedback.value(q.window);
                            // The epsilon keeps n steps of 1/n from falling short by rounding.
                            while q.success >= 1.0 - 1e-9 {
                                q.window += 1;
                                q.success -= 1.0;
                                q.failure = 0.0;
                            }
                            q.window = q.window.min(p.concurrency_limit.max(1));
                        }
                        q.fail_cohorts = 0.0;
                    }
                    Some(failure) => {
                        // Negative feedback (qmgr_queue_throttle).
                        if p.failed_cohort_limit > 0.0 {
                            q.fail_cohorts += 1.0 / f64::from(q.window.max(1));
                            if q.fail_cohorts >= p.failed_cohort_limit - 1e-9 {
                                // A dead site keeps the DSN of the failure that killed
                                // it, not that of a delivery still running then.
                                let dsn = match q.dead.take() {
                                    Some((_, dsn)) => dsn,
                                    None => Dsn::new(
                                        &failure.status,
                                        &format!(
                                            "delivery temporarily suspended: {}",
                                            failure.reason
                                        ),
                                    ),
                                };
                                q.dead = Some((now + self.params.minimal_backoff, dsn));
                            }
                        }
                        q.failure -= p.negative_feedback.value(q.window);
                        while q.failure < -1e-9 {
                            q.window = q.window.saturating_sub(1);
                            q.failure += 1.0;
                            q.success = 0.0;
                        }
                        q.window = q.window.max(1);
                    }
                }
            }
        }
        for rcpt in &f.rcpts {
            let r = results
                .iter()
                .find(|(i, _)| i == rcpt)
                .map_or(Result::Deferred, |(_, r)| r.clone());
            self.account(f.msg, &r, now);
        }
        true
    }

    /// Records a delivery whose agent died before it answered (Postfix's
    /// DELIVER_STAT_CRASH): its recipients count as deferred, and neither the
    /// destination nor the transport gets feedback, as nothing was learnt of
    /// them.
    pub fn report_crash(&mut self, batch: u64, now: f64) -> bool {
        let Some(f) = self.in_flight.remove(&batch) else {
            return false;
        };
        if let Some(t) = self.transports.get_mut(&f.transport) {
            t.busy = t.busy.saturating_sub(1);
            if let Some(q) = t.queues.get_mut(&f.queue) {
                q.active = q.active.saturating_sub(1);
            }
        }
        for _ in &f.rcpts {
            self.account(f.msg, &Result::Deferred, now);
        }
        true
    }

    fn account(&mut self, msg: u64, r: &Result, now: f64) {
        let Some(m) = self.messages.get_mut(&msg) else {
            return;
        };
        m.pending = m.pending.saturating_sub(1);
        if *r == Result::Deferred {
            m.any_deferred = true;
        }
        if m.pending == 0 {
            self.finish_message(msg, now);
        }
    }

    /// Postfix qmgr_active_done: remove, expire, or defer with backoff.
    fn finish_message(&mut self, msg: u64, now: f64) {
        let Some(m) = self.messages.remove(&msg) else {
            return;
        };
        if !m.any_deferred {
            self.retry.remove(&msg);
            self.events.push(Event::Done { msg });
            return;
        }
        let lifetime = if m.null_sender {
            self.params.bounce_queue_lifetime
        } else {
            self.params.maximal_queue_lifetime
        };
        if now >= m.arrival + lifetime {
            self.retry.remove(&msg);
            self.events.push(Event::Expired { msg });
            return;
        }
        let p = &self.params;
        let r = self.retry.entry(msg).or_insert(Retry {
            arrival: m.arrival,
            next_try: f64::INFINITY,
            backoff: 0.0,
            warned: false,
            flush: false,
        });
        // Postfix's qmgr_active_done_3_generic: the delay is the message's time in the
        // queue, not a count of attempts, so a message that waited for a queue run or a
        // flush is not retried sooner for it.
        r.backoff =
            (now - m.arrival).clamp(p.minimal_backoff, p.maximal_backoff.max(p.minimal_backoff));
        r.next_try = now + r.backoff;
        r.flush = false;
        // Postfix's qmgr warns a second early: compared with real Postfix 3.7, a 3s
        // delay_warning_time is reached two seconds after arrival, a 4s one is not.
        let warn = p.delay_warning > 0.0
            && !r.warned
            && now.floor() >= r.arrival.floor() + p.delay_warning - 1.0;
        if warn {
            r.warned = true;
        }
        let next_try = r.next_try;
        if warn {
            self.events.push(Event::DelayWarning { msg });
        }
        self.events.push(Event::Deferred { msg, next_try });
    }

    /// The events since the last call, oldest first.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The retry state of a deferred message: (next_try, backoff, warned).
    pub fn retry_state(&self, msg: u64) -> Option<(f64, f64, bool)> {
        self.retry
            .get(&msg)
            .map(|r| (r.next_try, r.backoff, r.warned))
    }

    /// A destination's (window, active, dead?) for logs and tests.
    pub fn queue_state(&self, transport: &str, queue: &str) -> Option<(u32, u32, bool)> {
        let q = self.transports.get(transport)?.queues.get(queue)?;
        Some((q.window, q.active, q.dead.is_some()))
    }

    /// Messages in the active set (Postfix's active queue size).
    pub fn active_messages(&self) -> usize {
        self.messages.len()
    }

    /// Deliveries in progress.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests;
