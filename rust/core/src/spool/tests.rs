use super::scan::scan_bytes;
use super::*;
use crate::testdir::TempDir;
use std::io::Write;

#[test]
fn group_commit_round_trip() {
    let tmp = TempDir::new();
    let dir = tmp.path();
    let mut w = Writer::open(dir, "w1", 1, 1 << 20).unwrap();
    let tickets: Vec<u64> = (0..100)
        .map(|i| w.submit(format!("message {i}").into_bytes()))
        .collect();
    let done = w.wait(*tickets.last().unwrap());
    assert_eq!(done.len(), 100);
    assert!(done.iter().all(|c| c.result.is_ok()));
    w.close();
    let report = scan(&dir.join(segment_name("w1", 1))).unwrap();
    assert_eq!(report.records.len(), 100);
    assert_eq!(report.records[7].1, b"message 7");
    assert!(report.tail.is_none() && report.corrupt.is_empty());
    let loc = done[42].result.as_ref().unwrap();
    let path = dir.join(segment_name("w1", loc.seq));
    assert_eq!(read_record(&path, loc.offset).unwrap(), b"message 42");
}

#[test]
fn scan_from_reads_only_what_follows() {
    let tmp = TempDir::new();
    let dir = tmp.path();
    let mut w = Writer::open(dir, "w1", 1, 1 << 20).unwrap();
    let mut t = 0;
    for i in 0..10 {
        t = w.submit(format!("m{i}").into_bytes());
    }
    w.wait(t);
    let path = dir.join(segment_name("w1", 1));
    let first = scan(&path).unwrap();
    let (off, payload) = first.records.last().unwrap();
    let end = off + (HEADER + payload.len()) as u64;
    assert!(scan_from(&path, end).unwrap().records.is_empty());
    let t = w.submit(b"later".to_vec());
    w.wait(t);
    w.close();
    let next = scan_from(&path, end).unwrap();
    assert_eq!(next.records, vec![(end, b"later".to_vec())]);
    assert!(next.tail.is_none() && next.corrupt.is_empty());
    assert_eq!(read_record(&path, end).unwrap(), b"later");
}

#[test]
fn rotates_segments_at_the_limit() {
    let tmp = TempDir::new();
    let dir = tmp.path();
    let mut w = Writer::open(dir, "w", 1, 64).unwrap();
    for i in 0..5 {
        let t = w.submit(vec![b'x'; 40 + i]);
        w.wait(t);
    }
    w.close();
    let segs = fs::read_dir(dir).unwrap().count();
    assert!(segs >= 4, "{segs} segments");
}

fn payloads(r: &ScanReport) -> Vec<&[u8]> {
    r.records.iter().map(|(_, p)| p.as_slice()).collect()
}

/// `names` framed one after another, then `zeros` bytes of preallocated space; with the
/// offset of each record's header.
fn segment(names: &[&str], zeros: usize) -> (Vec<u8>, Vec<usize>) {
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for name in names {
        offsets.push(data.len());
        data.extend(frame(name.as_bytes()));
    }
    data.extend(vec![0u8; zeros]);
    (data, offsets)
}

#[test]
fn torn_tail_is_reported_as_the_tail_not_in_the_middle() {
    let mut data = frame(b"one");
    data.extend(frame(b"two"));
    let whole = data.len();
    data.extend(&frame(b"three")[..6]);
    let r = scan_bytes(&data);
    assert_eq!(payloads(&r), vec![&b"one"[..], b"two"]);
    let tail = r.tail.expect("the cut record is reported");
    assert_eq!((tail.offset, tail.len), (whole as u64, 6));
    assert_eq!(tail.why, "record header cut short by the end of the file");
    assert!(r.corrupt.is_empty());
}

#[test]
fn a_damaged_last_record_followed_by_zeros_is_reported_with_its_bytes() {
    // The case that was dropped silently: the last record's checksum fails and only the
    // preallocated zeros follow. It may have been acknowledged: it is reported.
    let (mut data, at) = segment(&["one", "two", "three"], 4096);
    data[at[2] + HEADER + 1] ^= 0xff;
    let r = scan_bytes(&data);
    assert_eq!(payloads(&r), vec![&b"one"[..], b"two"]);
    assert_eq!(
        r.tail,
        Some(Damage {
            offset: at[2] as u64,
            len: frame(b"three").len() as u64,
            why: "bad checksum".to_string(),
        })
    );
    assert!(r.corrupt.is_empty());

    // Not followed by zeros: the same.
    let (mut bare, at) = segment(&["one", "three"], 0);
    bare[at[1] + HEADER] ^= 0xff;
    let r = scan_bytes(&bare);
    assert_eq!(payloads(&r), vec![&b"one"[..]]);
    assert_eq!(r.tail.map(|d| d.offset), Some(at[1] as u64));
}

#[test]
fn a_length_pointing_past_the_end_in_the_middle_costs_one_record() {
    // The length field of a record in the middle damaged to run past the end of the file:
    // it read as a torn tail, and every record after it was dropped without a word.
    for zeros in [0, 4096] {
        let (mut data, at) = segment(&["one", "two", "three", "four"], zeros);
        data[at[1]..at[1] + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
        let r = scan_bytes(&data);
        assert_eq!(
            payloads(&r),
            vec![&b"one"[..], b"three", b"four"],
            "{zeros}"
        );
        assert_eq!(
            r.corrupt,
            vec![Damage {
                offset: at[1] as u64,
                len: (at[2] - at[1]) as u64,
                why: format!(
                    "record cut short by the end of the file ({} of 1000000 bytes)",
                    data.len() - at[1] - HEADER
                ),
            }]
        );
        assert!(r.tail.is_none());
    }
}

#[test]
fn bad_checksum_in_the_middle_is_corrupt_and_the_rest_comes_back() {
    let (mut mid, at) = segment(&["one", "two", "three"], 64);
    mid[at[0] + HEADER] ^= 0xff;
    let r = scan_bytes(&mid);
    assert_eq!(
        r.corrupt,
        vec![Damage {
            offset: 0,
            len: at[1] as u64,
            why: "bad checksum".to_string()
        }]
    );
    assert_eq!(payloads(&r), vec![&b"two"[..], b"three"]);
    assert!(r.tail.is_none());
}

#[test]
fn huge_length_and_zero_padding() {
    let mut data = frame(b"ok");
    data.extend(u32::MAX.to_le_bytes());
    data.extend([0u8; 12]);
    let r = scan_bytes(&data);
    assert_eq!(r.records.len(), 1);
    assert_eq!(
        r.tail.unwrap().why,
        format!("record length {} too large", u32::MAX)
    );

    // A huge length in the middle: the records after it still come back.
    let (mut mid, at) = segment(&["ok", "bad", "after"], 32);
    mid[at[1]..at[1] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let r = scan_bytes(&mid);
    assert_eq!(payloads(&r), vec![&b"ok"[..], b"after"]);
    assert_eq!(r.corrupt.len(), 1);

    // Zeros alone after the last record are no damage.
    let (padded, _) = segment(&["ok"], 64);
    let r = scan_bytes(&padded);
    assert_eq!(r.records.len(), 1);
    assert!(r.corrupt.is_empty() && r.tail.is_none());
    assert!(scan_bytes(&[0u8; 100]).tail.is_none());
}

#[test]
fn scan_from_reports_damage_at_file_offsets() {
    let tmp = TempDir::new();
    let dir = tmp.path();
    let path = dir.join("x.seg");
    let (mut data, at) = segment(&["one", "two", "three", "four"], 128);
    data[at[1] + HEADER] ^= 0xff;
    data[at[3] + HEADER] ^= 0xff;
    fs::write(&path, &data).unwrap();
    let r = scan_from(&path, at[1] as u64).unwrap();
    assert_eq!(r.records, vec![(at[2] as u64, b"three".to_vec())]);
    assert_eq!(
        r.corrupt.iter().map(|d| d.offset).collect::<Vec<_>>(),
        vec![at[1] as u64]
    );
    assert_eq!(r.tail.map(|d| d.offset), Some(at[3] as u64));
}

#[test]
fn reopen_continues_after_existing_records() {
    let tmp = TempDir::new();
    let dir = tmp.path();
    {
        let w = Writer::open(dir, "w", 3, 1 << 20).unwrap();
        let t = w.submit(b"first".to_vec());
        w.wait(t);
    }
    let w = Writer::open(dir, "w", 3, 1 << 20).unwrap();
    let t = w.submit(b"second".to_vec());
    let done = w.wait(t);
    assert!(done[0].result.as_ref().unwrap().offset > 0);
    drop(w);
    let r = scan(&dir.join(segment_name("w", 3))).unwrap();
    let payloads: Vec<&[u8]> = r.records.iter().map(|(_, p)| p.as_slice()).collect();
    assert_eq!(payloads, vec![&b"first"[..], &b"second"[..]]);
}

#[test]
fn read_record_refuses_damage() {
    let tmp = TempDir::new();
    let dir = tmp.path();
    let path = dir.join("x.seg");
    let mut f = File::create(&path).unwrap();
    let mut data = frame(b"payload");
    data[HEADER + 1] ^= 1;
    f.write_all(&data).unwrap();
    assert!(matches!(read_record(&path, 0), Err(CoreError::Corrupt(_))));
    assert!(matches!(
        read_record(&path, 100),
        Err(CoreError::Corrupt(_))
    ));
}

#[test]
fn bad_writer_name_is_refused() {
    let tmp = TempDir::new();
    let dir = tmp.path();
    assert!(Writer::open(dir, "a/b", 1, 1024).is_err());
}

#[test]
fn linger_holds_the_next_commit_back() {
    let tmp = TempDir::new();
    let dir = tmp.path();
    let mut w = Writer::open(dir, "w1", 1, 1 << 20).unwrap();
    w.set_linger(std::time::Duration::from_millis(800));
    let first = w.submit(b"first".to_vec());
    w.wait(first);
    let second = w.submit(b"second".to_vec());
    std::thread::sleep(std::time::Duration::from_millis(50));
    // Within the linger after the first commit began: not committed yet.
    assert!(w.poll().iter().all(|c| c.ticket != second));
    let done = w.wait(second);
    assert!(done.iter().any(|c| c.ticket == second && c.result.is_ok()));
    // Closing commits what is still pending.
    let third = w.submit(b"third".to_vec());
    w.close();
    let report = scan(&dir.join(segment_name("w1", 1))).unwrap();
    assert_eq!(report.records.len(), 3, "ticket {third} committed at close");
}

#[test]
fn read_record_tells_damage_from_a_read_that_failed() {
    let tmp = TempDir::new();
    let dir = tmp.path();
    let path = dir.join("short.seg");
    let whole = frame(b"payload");
    fs::write(&path, &whole[..whole.len() - 2]).unwrap();
    assert!(matches!(read_record(&path, 0), Err(CoreError::Corrupt(_))));
    // A directory opens, and its read fails with EISDIR: the file is not damaged.
    let not_a_file = dir.join("dir.seg");
    fs::create_dir(&not_a_file).unwrap();
    match read_record(&not_a_file, 0) {
        Err(CoreError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EISDIR)),
        other => panic!("expected EISDIR, got {other:?}"),
    }
}

#[test]
fn batches_are_written_over_zeros_already_on_disk() {
    let tmp = TempDir::new();
    let dir = tmp.path();
    let mut w = Writer::open(dir, "w1", 1, 1 << 20).unwrap();
    let path = dir.join(segment_name("w1", 1));
    let first = w.submit(b"first".to_vec());
    w.wait(first);
    let record = frame(b"first").len() as u64;
    // The first batch wrote the zeros ahead; the next ones fit in them, so the file's
    // size (metadata an fdatasync would have to commit) stays as it is.
    assert_eq!(fs::metadata(&path).unwrap().len(), record + ZEROED_AHEAD);
    let second = w.submit(b"second".to_vec());
    w.wait(second);
    assert_eq!(fs::metadata(&path).unwrap().len(), record + ZEROED_AHEAD);
    // A reader takes the zeros after the last record as no record, and no damage.
    let report = scan(&path).unwrap();
    assert_eq!(report.records.len(), 2);
    assert!(report.tail.is_none() && report.corrupt.is_empty());
    // A batch past the zeros writes the next stretch of them.
    let big = w.submit(vec![7u8; ZEROED_AHEAD as usize]);
    w.wait(big);
    let end = record + frame(b"second").len() as u64 + HEADER as u64 + ZEROED_AHEAD;
    assert_eq!(fs::metadata(&path).unwrap().len(), end + ZEROED_AHEAD);
    w.close();
    assert_eq!(scan(&path).unwrap().records.len(), 3);
}

#[test]
fn records_ending_in_zeros_before_the_zeros_ahead_are_read_whole() {
    // Payloads whose last bytes are zeros, at every alignment against the word-wise skip of
    // the zeros after them.
    for tail in 0..17 {
        let mut payload = b"payload".to_vec();
        payload.resize(payload.len() + tail, 0);
        let mut data = frame(b"first");
        data.extend(frame(&payload));
        data.resize(data.len() + 4096 + tail, 0);
        let report = scan_bytes(&data);
        assert_eq!(report.records.len(), 2, "tail {tail}");
        assert_eq!(report.records[1].1, payload);
        assert!(
            report.tail.is_none() && report.corrupt.is_empty(),
            "tail {tail}"
        );
    }
}

#[test]
fn a_panic_mid_batch_fails_that_batch_only_and_leaves_none_of_it() {
    // Catalogue 9: the batch is written, then the committer panics before its fdatasync.
    let tmp = TempDir::new();
    let dir = tmp.path();
    let mut segments = Segments::open(dir, "w", 1, 1 << 20, None).unwrap();
    segments.commit_contained(&frame(b"before")).unwrap();
    segments.faults = Faults(vec!["spool-commit".into()]);
    let err = segments.commit_contained(&frame(b"lost")).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("queue writer failed: fault injected at spool-commit"));
    segments.commit_contained(&frame(b"after")).unwrap();
    let report = scan(&dir.join(segment_name("w", segments.seq))).unwrap();
    assert_eq!(payloads(&report), vec![&b"before"[..], b"after"]);
    assert!(report.tail.is_none() && report.corrupt.is_empty());
}
