//! Unit tests of the generator, the bad kinds and the manifest, against the
//! real `schemas` parsers.

use std::collections::{BTreeMap, HashMap, HashSet};

use schemas::{Exposure, Interaction, Joined, LogType, Request};

use crate::bad::BadKind;
use crate::generator::{Generator, Kind, Message};
use crate::manifest::{ExpectedPair, ManifestBuilder};
use crate::model::{Line, MAX_DELAY_MS};
use crate::params::Params;
use crate::verify::{self, Parsed};

const START: i64 = 1_763_719_200_000; // 2025-11-21 10:00:00 UTC

fn params(count: u64) -> Params {
    let mut p = Params::from_config(&common::config::LoadgenConfig::default(), START);
    p.count = count;
    p
}

fn generate(p: &Params) -> Vec<Message> {
    Generator::new(p).unwrap().collect()
}

fn manifest(p: &Params, msgs: &[Message]) -> crate::Manifest {
    let mut b = ManifestBuilder::new(p, &common::config::TopicsConfig::default());
    for m in msgs {
        b.observe(m);
    }
    b.finish()
}

fn bytes_of(msgs: &[Message]) -> Vec<(u64, LogType, String, Vec<u8>)> {
    msgs.iter()
        .map(|m| (m.seq, m.log_type, m.key.clone(), m.value.clone()))
        .collect()
}

#[test]
fn same_seed_same_bytes_different_seed_different_bytes() {
    let p = params(20_000);
    let a = bytes_of(&generate(&p));
    let b = bytes_of(&generate(&p));
    assert_eq!(a.len(), 20_000);
    assert!(a == b, "same parameters must give identical messages");

    let mut q = p.clone();
    q.seed += 1;
    let c = bytes_of(&generate(&q));
    assert_eq!(c.len(), 20_000);
    let same = a.iter().zip(&c).filter(|(x, y)| x.3 == y.3).count();
    assert!(
        same < 10,
        "a different seed must give different messages ({same} equal)"
    );

    let mut r = p.clone();
    r.start_ms += 1;
    assert!(
        bytes_of(&generate(&r)) != a,
        "start_ms is part of the content"
    );
}

#[test]
fn count_and_bad_count_are_exact() {
    for (count, bad_ratio) in [
        (0, 0.01),
        (1, 0.0),
        (1, 1.0),
        (7, 0.5),
        (1000, 0.013),
        (5003, 0.2),
    ] {
        let mut p = params(count);
        p.bad_ratio = bad_ratio;
        let msgs = generate(&p);
        assert_eq!(msgs.len() as u64, count);
        let bad = msgs
            .iter()
            .filter(|m| matches!(m.kind, Kind::Bad(_)))
            .count() as u64;
        assert_eq!(
            bad,
            (count as f64 * bad_ratio).round() as u64,
            "count {count}"
        );
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.seq, i as u64);
        }
    }
}

/// Every good message parses (envelope → type → line) into exactly the record
/// it was written from; every bad one fails with exactly its declared reason.
#[test]
fn good_messages_parse_and_bad_ones_fail_with_their_reason() {
    let mut p = params(30_000);
    p.bad_ratio = 0.3;
    p.bare_ratio = 0.3;
    let msgs = generate(&p);
    let mut kinds_seen: HashMap<(BadKind, LogType), u64> = HashMap::new();
    for m in &msgs {
        let r = verify::parse_value(m.log_type, &m.value, |env, parsed| {
            assert_eq!(env.bare, m.bare, "seq {}", m.seq);
            if !env.bare {
                assert_eq!(env.log_type.as_deref(), Some(m.log_type.as_str()));
                assert!(env.host.is_some() && env.file_path.is_some() && env.file_offset.is_some());
            }
            match (&m.kind, parsed) {
                (Kind::Good(Line::Request(a)), Parsed::Request(b)) => {
                    assert_eq!(*a, b.into_owned())
                }
                (Kind::Good(Line::Exposure(a)), Parsed::Exposure(b)) => {
                    assert_eq!(*a, b.into_owned())
                }
                (Kind::Good(Line::Interaction(a)), Parsed::Interaction(b)) => {
                    assert_eq!(*a, b.into_owned())
                }
                (kind, parsed) => panic!(
                    "seq {}: {kind:?} parsed as {parsed:?}: {}",
                    m.seq,
                    String::from_utf8_lossy(&m.value)
                ),
            }
        });
        match (&m.kind, r) {
            (Kind::Good(_), Ok(())) => {}
            (Kind::Good(_), Err(e)) => panic!(
                "good message {} does not parse: {e}: {}",
                m.seq,
                String::from_utf8_lossy(&m.value)
            ),
            (Kind::Bad(k), Err(e)) => {
                assert_eq!(
                    e.reason(),
                    k.reason(),
                    "{k:?} on {}: {e}: {}",
                    m.log_type,
                    String::from_utf8_lossy(&m.value)
                );
                *kinds_seen.entry((*k, m.log_type)).or_default() += 1;
            }
            (Kind::Bad(k), Ok(())) => unreachable!("{k:?} parsed"),
        }
    }
    // Every kind that applies to a type was exercised on it.
    for k in BadKind::ALL {
        for t in [LogType::Request, LogType::Exposure, LogType::Interaction] {
            if k.applies_to(t) {
                assert!(
                    kinds_seen.get(&(k, t)).copied().unwrap_or(0) > 0,
                    "{k:?} on {t} never generated"
                );
            }
        }
    }
}

/// Each kind × type, many times with different random choices, fails with
/// exactly its reason (a direct check independent of the stream's mix).
#[test]
fn every_bad_kind_fails_with_exactly_its_reason() {
    let mut p = params(10);
    p.bare_ratio = 0.5;
    let mut g = Generator::new(&p).unwrap();
    for k in BadKind::ALL {
        for t in [LogType::Request, LogType::Exposure, LogType::Interaction] {
            if !k.applies_to(t) {
                continue;
            }
            for _ in 0..200 {
                let m = g.bad_message(t, k);
                let err = verify::parse_value(t, &m.value, |_, p| format!("{p:?}")).expect_err(
                    &format!("{k:?} on {t} parsed: {}", String::from_utf8_lossy(&m.value)),
                );
                assert_eq!(
                    err.reason(),
                    k.reason(),
                    "{k:?} on {t}: {err}: {}",
                    String::from_utf8_lossy(&m.value)
                );
            }
        }
    }
}

/// Recomputes the expected pairs and counts from the bytes alone (parsing each
/// message like the pipeline) and compares with the manifest.
#[test]
fn manifest_pairs_match_an_independent_recomputation() {
    let mut p = params(60_000);
    p.out_of_order_ratio = 0.1;
    let msgs = generate(&p);
    let m = manifest(&p, &msgs);

    let mut exposures: HashMap<String, (Exposure<'static>, usize)> = HashMap::new();
    let mut interactions: Vec<(Interaction<'static>, usize)> = Vec::new();
    let mut good: BTreeMap<LogType, u64> = BTreeMap::new();
    let mut bad: BTreeMap<String, u64> = BTreeMap::new();
    let mut uids = HashSet::new();
    for (pos, msg) in msgs.iter().enumerate() {
        let r = verify::parse_value(msg.log_type, &msg.value, |_, parsed| match parsed {
            Parsed::Exposure(e) => {
                uids.insert(e.uid);
                let prev = exposures.insert(e.mark_id.to_string(), (e.into_owned(), pos));
                assert!(prev.is_none(), "mark_id must be unique per exposure");
            }
            Parsed::Interaction(i) => {
                uids.insert(i.uid);
                interactions.push((i.into_owned(), pos));
            }
            Parsed::Request(r) => {
                uids.insert(r.uid);
            }
            Parsed::Joined(_) => panic!("no joined lines are generated"),
        });
        match r {
            Ok(()) => *good.entry(msg.log_type).or_default() += 1,
            Err(e) => *bad.entry(e.reason().to_owned()).or_default() += 1,
        }
    }
    let mut pairs = Vec::new();
    let (mut orphans, mut late, mut skewed) = (0u64, 0u64, 0u64);
    for (i, ipos) in &interactions {
        let Some((e, epos)) = exposures.get(i.mark_id.as_ref()) else {
            orphans += 1;
            continue;
        };
        let delay = i.ts_ms - e.ts_ms;
        if delay < 0 {
            skewed += 1;
        } else if delay > p.window_ms {
            late += 1;
        } else {
            pairs.push(ExpectedPair {
                joined_id: Joined::from_pair(e, i).joined_id,
                mark_id: i.mark_id.to_string(),
                exposure_ts_ms: e.ts_ms,
                interaction_ts_ms: i.ts_ms,
                action: i.action.to_string(),
                delay_ms: delay,
                out_of_order: ipos < epos,
            });
        }
    }
    pairs.sort_by_key(|p| (p.interaction_ts_ms, p.joined_id, p.mark_id.clone()));
    assert!(!pairs.is_empty());
    assert_eq!(pairs, m.expected_pairs);
    assert_eq!(m.stats.orphan_interactions, orphans);
    assert_eq!(m.stats.out_of_window_interactions, late);
    assert_eq!(m.stats.skewed_interactions, skewed);
    assert_eq!(m.stats.exposures, exposures.len() as u64);
    assert_eq!(m.stats.interactions, interactions.len() as u64);
    assert_eq!(m.stats.distinct_uids, uids.len() as u64);
    assert_eq!(m.bad_by_reason, bad);
    for (t, n) in good {
        assert_eq!(m.topic(t).unwrap().counts.good, n, "{t}");
    }
    let joined_ids: HashSet<u64> = pairs.iter().map(|p| p.joined_id).collect();
    assert_eq!(joined_ids.len(), pairs.len(), "joined ids are distinct");
    // Every special case is present in a run of this size.
    assert!(orphans > 0 && late > 0 && skewed > 0);
    assert!(pairs.iter().any(|p| p.out_of_order));
    assert!(pairs.iter().any(|x| x.delay_ms == p.window_ms));
    assert!(pairs.iter().any(|p| p.delay_ms == 0));
    assert!(m.stats.exposures_without_interaction > 0);
    assert!(pairs.iter().any(|p| p.action == "click") && pairs.iter().any(|p| p.action == "close"));
}

#[test]
fn shares_are_roughly_honored() {
    let mut p = params(200_000);
    p.out_of_order_ratio = 0.05;
    p.orphan_ratio = 0.05;
    p.skew_ratio = 0.01;
    let msgs = generate(&p);
    let m = manifest(&p, &msgs);
    let s = &m.stats;
    let t = &m.totals;
    let close = |what: &str, got: f64, want: f64, tol: f64| {
        assert!(
            (got - want).abs() <= tol,
            "{what}: {got:.4} vs {want} ± {tol}"
        );
    };
    assert_eq!(t.messages, 200_000);
    assert_eq!(t.bad, 2_000);
    close(
        "bare",
        t.bare as f64 / t.messages as f64,
        p.bare_ratio,
        0.01,
    );
    close(
        "orphans",
        s.orphan_interactions as f64 / s.interactions as f64,
        p.orphan_ratio,
        0.015,
    );
    let joinable = (s.interactions - s.orphan_interactions) as f64;
    close(
        "skewed",
        s.skewed_interactions as f64 / joinable,
        p.skew_ratio,
        0.006,
    );
    // Sent before the exposure: the deliberate ones plus the skewed ones.
    close(
        "out of order",
        s.interactions_before_exposure as f64 / joinable,
        p.out_of_order_ratio + p.skew_ratio,
        0.015,
    );
    let late = s.out_of_window_interactions as f64 / joinable;
    assert!((0.01..0.08).contains(&late), "out of window share {late}");
    // Realistic mix: mostly request lines, a good number of exposures.
    let req = m.topic(LogType::Request).unwrap().counts.messages as f64 / t.messages as f64;
    assert!((0.7..0.95).contains(&req), "request share {req}");
    let no_interaction = s.exposures_without_interaction as f64 / s.exposures as f64;
    assert!((0.5..0.8).contains(&no_interaction), "{no_interaction}");
    // Skewed users: the busiest uid has many traces.
    let mut per_uid: HashMap<u64, u64> = HashMap::new();
    for msg in &msgs {
        if let Kind::Good(Line::Request(r)) = &msg.kind {
            if r.parent_span_id.is_empty() {
                *per_uid.entry(r.uid).or_default() += 1;
            }
        }
    }
    let max = per_uid.values().max().copied().unwrap();
    assert!(max >= 20, "busiest user has only {max} traces");
    // Bad reasons: every reason code is represented.
    for reason in [
        "invalid_json",
        "invalid_utf8",
        "field_count",
        "bad_field",
        "empty",
        "missing_field",
        "unknown_log_type",
    ] {
        assert!(
            m.bad_by_reason.get(reason).copied().unwrap_or(0) > 0,
            "{reason}"
        );
    }
}

#[test]
fn traces_are_well_formed() {
    let p = params(50_000);
    let msgs = generate(&p);
    let mut traces: HashMap<String, Vec<Request<'static>>> = HashMap::new();
    let mut last_request_ts = i64::MIN;
    let mut last_exposure_ts = i64::MIN;
    for m in &msgs {
        match &m.kind {
            Kind::Good(Line::Request(r)) => {
                assert!(
                    r.ts_ms >= last_request_ts,
                    "request lines are in event-time order"
                );
                last_request_ts = r.ts_ms;
                traces
                    .entry(r.trace_id.to_string())
                    .or_default()
                    .push(r.clone());
            }
            Kind::Good(Line::Exposure(e)) => {
                assert!(
                    e.ts_ms >= last_exposure_ts,
                    "exposures are in event-time order"
                );
                last_exposure_ts = e.ts_ms;
                assert!(e.mark_id.starts_with("m-"));
            }
            _ => {}
        }
    }
    let mut services = HashSet::new();
    let mut statuses = HashSet::new();
    let n = traces.len();
    let mut complete = 0;
    for (id, hops) in &traces {
        let spans: HashMap<&str, &Request> = hops.iter().map(|h| (h.span_id.as_ref(), h)).collect();
        let edges: Vec<_> = hops
            .iter()
            .filter(|h| h.parent_span_id.is_empty())
            .collect();
        assert_eq!(edges.len(), 1, "trace {id} has one edge hop");
        assert_eq!(edges[0].service, "ad-gateway");
        assert_eq!(edges[0].caller, "");
        if hops.len() >= 3 {
            complete += 1;
        }
        assert!(hops.len() <= 8, "trace {id}: {} hops", hops.len());
        for h in hops {
            services.insert(h.service.to_string());
            statuses.insert(h.status);
            assert_eq!(h.uid, edges[0].uid);
            assert_eq!(h.psid, edges[0].psid);
            assert_eq!(h.idc, edges[0].idc);
            if let Some(parent) = spans.get(h.parent_span_id.as_ref()) {
                assert_eq!(h.caller, parent.service);
                assert!(h.latency_ms < parent.latency_ms, "{h:?} vs {parent:?}");
                assert!(h.ts_ms >= parent.ts_ms);
            } else {
                assert!(h.parent_span_id.is_empty(), "trace {id}: dangling parent");
            }
        }
    }
    // Only the last trace may be cut short by the exact count.
    assert!(complete >= n - 1);
    for s in [
        "ad-gateway",
        "ad-server",
        "ad-retrieval",
        "ad-ranker",
        "user-profile",
        "bidder",
        "ctr-predictor",
    ] {
        assert!(services.contains(s), "{s}");
    }
    assert!(statuses.contains(&200) && statuses.iter().any(|s| *s >= 500));
    assert!(statuses.iter().any(|s| (400..500).contains(s)));
}

#[test]
fn filebeat_offsets_increase_per_host_and_file() {
    let p = params(20_000);
    let msgs = generate(&p);
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    let mut enveloped = 0;
    for m in &msgs {
        let _ = verify::parse_value(m.log_type, &m.value, |env, _| {
            if env.bare {
                return;
            }
            enveloped += 1;
            let key = (
                env.host.as_deref().unwrap().to_owned(),
                env.file_path.as_deref().unwrap().to_owned(),
            );
            assert!(
                key.1.starts_with("/data/logs/")
                    && key.1.ends_with(&format!("/{}.log", m.log_type))
            );
            let off = env.file_offset.unwrap();
            if let Some(prev) = last.insert(key.clone(), off) {
                assert!(off > prev, "{key:?}: offset {off} after {prev}");
            }
            assert!(env.idc.is_some());
            assert!(env.read_ts_ms.is_some());
        });
    }
    assert!(enveloped > 15_000);
}

#[test]
fn keys_are_trace_ids_and_mark_ids() {
    let p = params(5_000);
    for m in generate(&p) {
        if let Kind::Good(line) = &m.kind {
            let want = match line {
                Line::Request(r) => r.trace_id.to_string(),
                Line::Exposure(e) => e.mark_id.to_string(),
                Line::Interaction(i) => i.mark_id.to_string(),
            };
            assert_eq!(m.key, want);
        }
    }
}

#[test]
fn default_start_puts_every_event_at_or_before_now() {
    let mut p = params(30_000);
    let now = 1_800_000_000_000;
    p.start_ms = p.start_ending_at(now);
    let m = manifest(&p, &generate(&p));
    let last = m.stats.last_event_ts_ms.unwrap();
    assert!(last <= now, "{last} > {now}");
    // Only skewed interactions (stamped up to 3 s before their exposure) may precede the start.
    assert!(m.stats.first_event_ts_ms.unwrap() >= p.start_ms - 3_000);
    assert!(p.start_ms >= now - p.traffic_span_ms() - MAX_DELAY_MS);
}

#[test]
fn bad_parameters_are_rejected() {
    let base = params(10);
    for (f, name) in [
        (|p: &mut Params| p.bad_ratio = 1.5, "bad_ratio"),
        (|p: &mut Params| p.bare_ratio = -0.1, "bare_ratio"),
        (
            |p: &mut Params| p.out_of_order_ratio = f64::NAN,
            "out_of_order_ratio",
        ),
        (|p: &mut Params| p.orphan_ratio = 0.95, "orphan_ratio"),
        (|p: &mut Params| p.event_rate = 0.0, "event_rate"),
        (|p: &mut Params| p.users = 0, "users"),
        (|p: &mut Params| p.start_ms = -1, "start_ms"),
    ] as [(fn(&mut Params), &str); 7]
    {
        let mut p = base.clone();
        f(&mut p);
        let err = Generator::new(&p).err().expect(name).to_string();
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn manifest_json_round_trips() {
    let p = params(3_000);
    let m = manifest(&p, &generate(&p));
    let json = serde_json::to_string(&m).unwrap();
    let back: crate::Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["per_topic"]["request"]["messages"].as_u64().unwrap() > 0);
    assert!(v["expected_pairs"].is_array());
    assert!(m.to_string().contains("expected pairs"));
}
