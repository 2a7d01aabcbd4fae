//! The scheduler in virtual time: every clock is a number we advance by hand.

use super::*;

fn rcpts(n: u32, transport: &str, queue: &str) -> Vec<(u32, String, String)> {
    (0..n)
        .map(|i| (i, transport.to_string(), queue.to_string()))
        .collect()
}

fn sched() -> Scheduler {
    Scheduler::new(Params::default(), TransportParams::default())
}

fn sent(b: &Batch) -> Vec<(u32, Result)> {
    b.rcpts.iter().map(|r| (*r, Result::Sent)).collect()
}

#[test]
fn feedback_syntax() {
    assert_eq!(
        Feedback::parse("1/concurrency"),
        Some(Feedback::PerConcurrency(1.0))
    );
    assert_eq!(Feedback::parse("1/4"), Some(Feedback::Constant(0.25)));
    assert_eq!(Feedback::parse("1"), Some(Feedback::Constant(1.0)));
    assert_eq!(Feedback::parse("x/concurrency"), None);
    assert_eq!(Feedback::parse("1/0"), None);
}

#[test]
fn slow_start_from_5_to_20() {
    let mut s = sched();
    for m in 0..400 {
        s.insert(m, 0.0, false, &rcpts(1, "smtp", "example.com"));
    }
    let first = s.next_deliveries(0.0, 1000);
    assert_eq!(first.len(), 5, "initial_destination_concurrency");
    let mut inflight: VecDeque<Batch> = first.into();
    let mut max_seen = 5;
    let mut now = 0.0;
    // Complete one delivery at a time, refill, and watch the window grow.
    while let Some(b) = inflight.pop_front() {
        now += 1.0;
        assert!(s.report(b.id, now, &sent(&b), None));
        for nb in s.next_deliveries(now, 1000) {
            inflight.push_back(nb);
        }
        let (window, active, dead) = s.queue_state("smtp", "example.com").unwrap();
        assert!(!dead);
        assert!(active <= window, "never more than the window in flight");
        assert!(window <= 20, "capped at the destination concurrency limit");
        max_seen = max_seen.max(active);
    }
    assert_eq!(max_seen, 20);
    assert_eq!(s.queue_state("smtp", "example.com").unwrap().0, 20);
    let done = s
        .drain_events()
        .iter()
        .filter(|e| matches!(e, Event::Done { .. }))
        .count();
    assert_eq!(done, 400);
}

#[test]
fn window_grows_by_one_per_window_of_successes() {
    // 1/concurrency positive feedback: 5 successes take 5 → 6, then 6 more → 7.
    let mut s = sched();
    for m in 0..50 {
        s.insert(m, 0.0, false, &rcpts(1, "smtp", "d"));
    }
    let mut done = 0;
    let mut batches = s.next_deliveries(0.0, 100);
    let mut windows = Vec::new();
    while done < 11 {
        let b = batches.remove(0);
        s.report(b.id, 1.0, &sent(&b), None);
        done += 1;
        windows.push(s.queue_state("smtp", "d").unwrap().0);
        batches.extend(s.next_deliveries(1.0, 100));
    }
    assert_eq!(windows, vec![5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 7]);
}

#[test]
fn backoff_is_the_time_queued_from_300_to_4000() {
    let mut s = sched();
    let mut now = 0.0;
    s.insert(7, now, false, &rcpts(1, "smtp", "down.example"));
    let mut delays = Vec::new();
    for _ in 0..7 {
        let b = s.next_deliveries(now, 10).pop().expect("one delivery");
        s.report(b.id, now, &[(0, Result::Deferred)], None);
        let next = s
            .drain_events()
            .into_iter()
            .find_map(|e| match e {
                Event::Deferred { msg: 7, next_try } => Some(next_try),
                _ => None,
            })
            .expect("deferred");
        delays.push(next - now);
        assert!(s.take_due(next - 1.0).is_empty(), "not before its time");
        assert_eq!(s.next_wakeup(), Some(next));
        now = next;
        assert_eq!(s.take_due(now), vec![7]);
        s.insert(7, 0.0, false, &rcpts(1, "smtp", "down.example"));
    }
    assert_eq!(
        delays,
        vec![300.0, 300.0, 600.0, 1200.0, 2400.0, 4000.0, 4000.0]
    );
}

#[test]
fn backoff_counts_the_wait_for_a_queue_run() {
    // Arrived at 0, first tried at 1000 (the queue was busy): Postfix defers it for its
    // 1000 s in the queue, not for minimal_backoff_time.
    let mut s = sched();
    s.insert(8, 0.0, false, &rcpts(1, "smtp", "down.example"));
    let b = s.next_deliveries(1000.0, 10).pop().expect("one delivery");
    s.report(b.id, 1000.0, &[(0, Result::Deferred)], None);
    let next = s.drain_events().into_iter().find_map(|e| match e {
        Event::Deferred { msg: 8, next_try } => Some(next_try),
        _ => None,
    });
    assert_eq!(next, Some(2000.0));
}

#[test]
fn dead_destination_after_failed_cohort() {
    let mut s = sched();
    for m in 0..20 {
        s.insert(m, 0.0, false, &rcpts(1, "smtp", "dead.example"));
    }
    s.insert(100, 0.0, false, &rcpts(1, "smtp", "alive.example"));
    let batches = s.next_deliveries(10.0, 100);
    let (dead_b, alive_b): (Vec<_>, Vec<_>) =
        batches.into_iter().partition(|b| b.queue == "dead.example");
    assert_eq!(dead_b.len(), 5);
    assert_eq!(alive_b.len(), 1);
    let msg = "connect to dead.example[192.0.2.1]:25: Connection refused";
    // A cohort is a window's worth of consecutive site failures.
    for (i, b) in dead_b.iter().enumerate() {
        s.report(
            b.id,
            10.0,
            &[(0, Result::Deferred)],
            Some(&Dsn::new("4.4.1", msg)),
        );
        let dead = s.queue_state("smtp", "dead.example").unwrap().2;
        assert_eq!(dead, i == 4, "dead only after the whole cohort failed");
    }
    // The rest of its mail is deferred without a delivery slot.
    assert!(s.next_deliveries(11.0, 100).is_empty());
    let ev = s.drain_events();
    let suspended: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::RecipientDeferred { msg: m, dsn, .. } => Some((*m, dsn.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(suspended.len(), 15);
    let suspension = Dsn::new("4.4.1", &format!("delivery temporarily suspended: {msg}"));
    assert!(suspended.iter().all(|(_, d)| d == &suspension));
    // The live destination was untouched.
    s.report(alive_b[0].id, 11.0, &sent(&alive_b[0]), None);
    assert!(s.drain_events().contains(&Event::Done { msg: 100 }));
    // New mail for the dead destination is deferred at once, until
    // minimal_backoff_time has passed; then it gets a fresh window.
    s.insert(200, 12.0, false, &rcpts(1, "smtp", "dead.example"));
    assert!(s.next_deliveries(12.0, 100).is_empty());
    assert!(matches!(
        s.drain_events()[0],
        Event::RecipientDeferred { msg: 200, .. }
    ));
    assert_eq!(s.next_wakeup().map(|t| t <= 310.0), Some(true));
    s.insert(201, 311.0, false, &rcpts(1, "smtp", "dead.example"));
    let b = s.next_deliveries(311.0, 100);
    assert_eq!(b.len(), 1);
    assert_eq!(
        s.queue_state("smtp", "dead.example").unwrap(),
        (5, 1, false)
    );
}

#[test]
fn dead_destination_keeps_the_dsn_of_the_failure_that_killed_it() {
    // Postfix's qmgr_queue_throttle copies the DSN of the failure that makes the
    // site dead; deliveries still running then do not replace it.
    let mut s = sched();
    for m in 0..20 {
        s.insert(m, 0.0, false, &rcpts(1, "smtp", "dead.example"));
    }
    let mut inflight: VecDeque<Batch> = s.next_deliveries(0.0, 100).into();
    let refused = Dsn::new(
        "4.4.1",
        "connect to dead.example[192.0.2.1]:25: Connection refused",
    );
    for _ in 0..4 {
        let b = inflight.pop_front().unwrap();
        s.report(b.id, 1.0, &[(0, Result::Deferred)], Some(&refused));
    }
    // The window shrank to 4 with one still running: three more go out.
    inflight.extend(s.next_deliveries(1.0, 100));
    assert_eq!(inflight.len(), 4);
    let greeting = Dsn::new(
        "4.7.0",
        "host dead.example[192.0.2.1] refused to talk to me: 421 4.7.0 try later",
    );
    let b = inflight.pop_front().unwrap();
    s.report(b.id, 2.0, &[(0, Result::Deferred)], Some(&greeting));
    assert!(s.queue_state("smtp", "dead.example").unwrap().2);
    let b = inflight.pop_front().unwrap();
    s.report(b.id, 3.0, &[(0, Result::Deferred)], Some(&refused));
    assert!(s.next_deliveries(4.0, 100).is_empty());
    let dsns: Vec<Dsn> = s
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::RecipientDeferred { dsn, .. } => Some(dsn),
            _ => None,
        })
        .collect();
    assert_eq!(dsns.len(), 12);
    let suspension = Dsn::new(
        "4.7.0",
        "delivery temporarily suspended: host dead.example[192.0.2.1] refused to talk to me: \
         421 4.7.0 try later",
    );
    assert!(dsns.iter().all(|d| d == &suspension), "{dsns:?}");
}

#[test]
fn success_resets_failed_cohorts() {
    let mut s = sched();
    for m in 0..40 {
        s.insert(m, 0.0, false, &rcpts(1, "smtp", "flaky"));
    }
    // Alternate failure and success: never a full failed cohort.
    for round in 0..30 {
        let b = s.next_deliveries(1.0, 1).pop().unwrap();
        if round % 2 == 0 {
            let lost = Dsn::new("4.4.2", "lost connection");
            s.report(b.id, 1.0, &[(0, Result::Deferred)], Some(&lost));
        } else {
            s.report(b.id, 1.0, &sent(&b), None);
        }
        assert!(!s.queue_state("smtp", "flaky").unwrap().2);
    }
}

#[test]
fn recipients_grouped_up_to_the_limit() {
    let mut s = sched();
    s.set_transport(
        "smtp",
        TransportParams {
            recipient_limit: 50,
            ..Default::default()
        },
    );
    // 120 recipients to one destination, 3 to another, in one message.
    let mut r = rcpts(120, "smtp", "big.example");
    r.extend((120..123).map(|i| (i, "smtp".to_string(), "small.example".to_string())));
    s.insert(1, 0.0, false, &r);
    let b = s.next_deliveries(0.0, 100);
    let mut sizes: Vec<(String, usize)> =
        b.iter().map(|b| (b.queue.clone(), b.rcpts.len())).collect();
    sizes.sort();
    assert_eq!(
        sizes,
        vec![
            ("big.example".into(), 20),
            ("big.example".into(), 50),
            ("big.example".into(), 50),
            ("small.example".into(), 3)
        ]
    );
    // Each recipient is in exactly one batch.
    let mut all: Vec<u32> = b.iter().flat_map(|b| b.rcpts.clone()).collect();
    all.sort();
    assert_eq!(all, (0..123).collect::<Vec<_>>());
    for x in &b {
        s.report(x.id, 1.0, &sent(x), None);
    }
    assert_eq!(s.drain_events(), vec![Event::Done { msg: 1 }]);
}

#[test]
fn single_rcpt_messages_go_one_recipient_a_delivery() {
    let mut s = sched();
    s.insert_message(1, 0.0, false, &rcpts(3, "smtp", "x"), true);
    s.insert(2, 0.0, false, &rcpts(3, "smtp", "x"));
    let b = s.next_deliveries(0.0, 100);
    let sizes: Vec<(u64, usize)> = b.iter().map(|b| (b.msg, b.rcpts.len())).collect();
    assert_eq!(sizes, vec![(1, 1), (1, 1), (1, 1), (2, 3)]);
}

#[test]
fn fairness_between_huge_and_tiny_destinations() {
    let mut s = sched();
    s.set_transport(
        "smtp",
        TransportParams {
            process_limit: 3,
            ..Default::default()
        },
    );
    for m in 0..10_000 {
        s.insert(m, 0.0, false, &rcpts(1, "smtp", "huge.example"));
    }
    s.insert(99_999, 1.0, false, &rcpts(1, "smtp", "tiny.example"));
    // Three processes in total: the tiny destination gets one of the first three.
    let b = s.next_deliveries(1.0, 100);
    assert_eq!(b.len(), 3, "process limit");
    assert!(b.iter().any(|x| x.queue == "tiny.example"));

    // Later arrivals too: keep the huge one busy, add tiny mail, it goes next.
    let mut inflight = b;
    for k in 0..5u64 {
        let done = inflight.remove(0);
        s.report(done.id, 2.0, &sent(&done), None);
        s.insert(200_000 + k, 2.0, false, &rcpts(1, "smtp", "tiny.example"));
        let nb = s.next_deliveries(2.0, 100);
        assert_eq!(nb.len(), 1);
        inflight.extend(nb);
        let tiny_waiting = s.queue_state("smtp", "tiny.example").unwrap();
        // The tiny message waits for at most one turn of the rotation.
        assert!(
            inflight.iter().any(|x| x.msg == 200_000 + k) || tiny_waiting.1 > 0,
            "tiny destination starved"
        );
    }
}

#[test]
fn transports_round_robin() {
    let mut s = sched();
    for m in 0..100 {
        s.insert(m, 0.0, false, &rcpts(1, "smtp", &format!("d{m}")));
    }
    s.insert(500, 0.0, false, &rcpts(1, "local", "localhost"));
    let b = s.next_deliveries(0.0, 2);
    let t: Vec<&str> = b.iter().map(|x| x.transport.as_str()).collect();
    assert!(t.contains(&"local"), "{t:?}");
}

#[test]
fn expiry_and_delay_warning() {
    let mut s = Scheduler::new(
        Params {
            maximal_queue_lifetime: 3600.0,
            bounce_queue_lifetime: 600.0,
            delay_warning: 1000.0,
            ..Params::default()
        },
        TransportParams::default(),
    );
    let mut now = 0.0;
    let mut warnings = 0;
    let mut expired = false;
    for _ in 0..20 {
        s.insert(1, 0.0, false, &rcpts(1, "smtp", "x"));
        let b = s.next_deliveries(now, 1).pop().unwrap();
        s.report(b.id, now, &[(0, Result::Deferred)], None);
        let mut next = None;
        for e in s.drain_events() {
            match e {
                Event::DelayWarning { msg: 1 } => {
                    assert!(now >= 999.0);
                    warnings += 1;
                }
                Event::Deferred { next_try, .. } => next = Some(next_try),
                Event::Expired { msg: 1 } => {
                    assert!(now >= 3600.0);
                    expired = true;
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        match next {
            Some(t) => now = t,
            None => break,
        }
    }
    assert!(expired);
    assert_eq!(warnings, 1, "the delay notice goes out once");
    // Null-sender mail expires after bounce_queue_lifetime.
    s.insert(2, 0.0, true, &rcpts(1, "smtp", "x"));
    let b = s.next_deliveries(700.0, 1).pop().unwrap();
    s.report(b.id, 700.0, &[(0, Result::Deferred)], None);
    assert_eq!(s.drain_events(), vec![Event::Expired { msg: 2 }]);
}

#[test]
fn defer_transports_hold_until_flush() {
    let mut s = sched();
    s.set_transport(
        "smtp",
        TransportParams {
            deferred: true,
            ..Default::default()
        },
    );
    s.insert(1, 0.0, false, &rcpts(2, "smtp", "x"));
    s.insert(2, 0.0, false, &rcpts(1, "local", "localhost"));
    let b = s.next_deliveries(0.0, 10);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].transport, "local");
    let ev = s.drain_events();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::RecipientDeferred { dsn, .. } if dsn == &Dsn::new("4.3.2", "deferred transport")))
            .count(),
        2
    );
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Deferred { msg: 1, .. })));
    // A flush makes it due now and lets the held transport deliver it.
    s.flush(5.0);
    assert_eq!(s.take_due(5.0), vec![1]);
    s.insert(1, 0.0, false, &rcpts(2, "smtp", "x"));
    let b = s.next_deliveries(5.0, 10);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].rcpts, vec![0, 1]);
}

#[test]
fn flush_site_only_touches_that_site() {
    let mut s = sched();
    for (m, q) in [(1, "a.example"), (2, "b.example")] {
        s.insert(m, 0.0, false, &rcpts(1, "smtp", q));
    }
    for b in s.next_deliveries(0.0, 10) {
        s.report(b.id, 0.0, &[(0, Result::Deferred)], None);
    }
    s.drain_events();
    s.flush_site(10.0, "a.example", &[1]);
    assert_eq!(s.take_due(10.0), vec![1]);
    assert_eq!(s.take_due(299.0), Vec::<u64>::new());
    assert_eq!(s.take_due(300.0), vec![2]);
}

#[test]
fn missing_results_count_as_deferred_and_unknown_batches_are_refused() {
    let mut s = sched();
    s.insert(1, 0.0, false, &rcpts(3, "smtp", "x"));
    let b = s.next_deliveries(0.0, 10).pop().unwrap();
    assert!(s.report(b.id, 1.0, &[(0, Result::Sent), (1, Result::Bounced)], None));
    assert!(!s.report(b.id, 1.0, &[], None));
    assert!(matches!(
        s.drain_events()[0],
        Event::Deferred { msg: 1, .. }
    ));
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.active_messages(), 0);
}

#[test]
fn throttled_transport_defers_its_mail_until_the_retry_time() {
    let mut s = sched();
    for m in 0..3 {
        s.insert(m, 0.0, false, &rcpts(1, "crash", "a.example"));
    }
    s.insert(9, 0.0, false, &rcpts(1, "smtp", "b.example"));
    let unavailable = Dsn::new("4.3.0", "mail transport unavailable");
    assert!(s.throttle_transport("crash", 60.0, unavailable.clone()));
    assert!(
        !s.throttle_transport("crash", 90.0, Dsn::new("4.3.0", "other")),
        "keeps the first"
    );
    let batches = s.next_deliveries(1.0, 100);
    assert_eq!(batches.len(), 1, "the other transport goes on");
    assert_eq!(batches[0].transport, "smtp");
    let deferred: Vec<_> = s
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::RecipientDeferred { msg, dsn, .. } => Some((msg, dsn)),
            _ => None,
        })
        .collect();
    assert_eq!(deferred.len(), 3);
    assert!(deferred.iter().all(|(_, d)| d == &unavailable));
    assert_eq!(s.next_wakeup(), Some(60.0));
    // Mail arriving while throttled is deferred too, not attempted.
    s.insert(4, 2.0, false, &rcpts(1, "crash", "a.example"));
    assert!(s.next_deliveries(2.0, 100).is_empty());
    assert!(s.transport_throttled("crash"));
    // The retry time ends the throttle, even with nothing waiting.
    s.drain_events();
    assert!(s.next_deliveries(60.0, 100).is_empty());
    assert!(!s.transport_throttled("crash"));
    assert_eq!(s.next_wakeup().filter(|t| *t < 300.0), None);
    s.insert(5, 61.0, false, &rcpts(1, "crash", "a.example"));
    assert_eq!(s.next_deliveries(61.0, 100).len(), 1);
}

#[test]
fn flush_and_unthrottle_end_a_throttle() {
    let mut s = sched();
    s.throttle_transport(
        "crash",
        60.0,
        Dsn::new("4.3.0", "mail transport unavailable"),
    );
    s.flush(1.0);
    assert!(!s.transport_throttled("crash"));
    s.throttle_transport(
        "crash",
        60.0,
        Dsn::new("4.3.0", "mail transport unavailable"),
    );
    s.unthrottle_transport("crash");
    assert!(!s.transport_throttled("crash"));
}

#[test]
fn a_crash_defers_without_feedback() {
    let mut s = sched();
    for m in 0..10 {
        s.insert(m, 0.0, false, &rcpts(1, "crash", "a.example"));
    }
    let batches = s.next_deliveries(0.0, 100);
    assert_eq!(batches.len(), 5);
    for b in &batches {
        assert!(s.report_crash(b.id, 1.0));
    }
    assert!(!s.report_crash(batches[0].id, 1.0));
    // Neither shrunk nor dead, nor grown: the next five go out as the first did.
    assert_eq!(s.queue_state("crash", "a.example"), Some((5, 0, false)));
    assert!(!s.transport_throttled("crash"));
    let deferred = s
        .drain_events()
        .iter()
        .filter(|e| matches!(e, Event::Deferred { .. }))
        .count();
    assert_eq!(deferred, 5);
    assert_eq!(s.next_deliveries(1.0, 100).len(), 5);
}

#[test]
fn delay_warning_a_second_early_in_whole_seconds() {
    // As Postfix's qmgr: warned once the whole seconds since arrival reach
    // delay_warning_time - 1.
    for (now, warned) in [(11.9, false), (12.0, true)] {
        let mut s = Scheduler::new(
            Params {
                delay_warning: 3.0,
                ..Params::default()
            },
            TransportParams::default(),
        );
        s.insert(1, 10.5, false, &rcpts(1, "smtp", "x"));
        let b = s.next_deliveries(now, 1).pop().unwrap();
        s.report(b.id, now, &[(0, Result::Deferred)], None);
        let events = s.drain_events();
        assert_eq!(
            events.contains(&Event::DelayWarning { msg: 1 }),
            warned,
            "{now}"
        );
    }
}
