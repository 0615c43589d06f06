//! Deterministic, realistic ad-log traffic for the pipeline, and an exact
//! account of what was sent.
//!
//! # What it produces
//!
//! Filebeat-wrapped log lines for the `request`, `exposure` and `interaction`
//! topics, built with the `schemas` writers so they are exactly the contract:
//!
//! * [`model`]: the traffic model. Multi-hop traces (ad-gateway → ad-server →
//!   retrieval/ranker/profile/bidder/ctr-predictor), skewed users and
//!   placements, exposures, interactions with a log-normal delay and a long
//!   tail past the 1 h join window, out-of-order, skewed, boundary and orphan
//!   interactions.
//! * [`generator`]: the stream. A virtual clock at `event_rate` events/s of
//!   event time (independent of the send rate), lines ordered by event time
//!   except the deliberate out-of-order ones, each wrapped as Filebeat's Kafka
//!   output does (or bare, `bare_ratio`), with `bad_ratio` malformed messages
//!   interleaved. Same [`Params`] ⇒ byte-identical messages in the same order.
//! * [`bad`]: the malformed kinds, each with the `ParseError::reason()` the
//!   pipeline must report for it.
//! * [`manifest`]: counts per topic, good/bad, bad by reason, the expected
//!   joined pairs with their deterministic ids, and what the broker
//!   acknowledged — so tests compare exact numbers.
//! * [`producer`]: rdkafka `FutureProducer` with many sends in flight, pacing,
//!   retries, progress; or a dry run to stdout.
//! * [`verify`]: how the pipeline is expected to read a message (envelope →
//!   log type → line), used by the tests.
//!
//! # Use in tests
//!
//! ```no_run
//! # fn demo() -> anyhow::Result<()> {
//! let cfg = common::Config::default();
//! let mut params = loadgen::Params::from_config(&cfg.loadgen, 1_763_719_200_000);
//! params.count = 10_000;
//! for m in loadgen::Generator::new(&params)? {
//!     // m.topic(&cfg.topics), m.key, m.value, m.kind
//! #   let _ = m;
//! }
//! let manifest = loadgen::producer::manifest_only(&params, &cfg)?;
//! assert_eq!(manifest.totals.messages, 10_000);
//! # Ok(()) }
//! ```
//! Against a broker: `loadgen::producer::produce(&cfg, &params, &opts).await?`
//! then `manifest.ensure_delivered()?`.

pub mod bad;
pub mod generator;
pub mod manifest;
pub mod model;
pub mod params;
pub mod producer;
pub mod replay;
pub mod rewrite;
pub mod shadow;
pub mod verify;

pub use bad::BadKind;
pub use generator::{Generator, Kind, Message};
pub use manifest::{ExpectedPair, Manifest, ManifestBuilder};
pub use params::Params;
pub use producer::{dry_run, manifest_only, produce, SendOptions};
pub use replay::{replay, Pace, ReplayManifest, ReplayOptions};
pub use rewrite::Rewrite;

#[cfg(test)]
mod tests;
