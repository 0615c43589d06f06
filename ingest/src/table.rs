//! The ClickHouse tables ingest writes, and the exact column lists it inserts.

use schemas::LogType;

/// A destination table. The discriminant indexes a batch's per-table buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Request = 0,
    Exposure = 1,
    Interaction = 2,
    Joined = 3,
    DeadLetter = 4,
}

/// Source columns every raw row carries: where it came from and when it was ingested.
const SOURCE_COLUMNS: &str =
    "_topic, _partition, _offset, _kafka_ts_ms, _src_host, _src_file, _src_file_offset, _ingested_at";

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Request,
        Table::Exposure,
        Table::Interaction,
        Table::Joined,
        Table::DeadLetter,
    ];

    pub fn for_log_type(t: LogType) -> Table {
        match t {
            LogType::Request => Table::Request,
            LogType::Exposure => Table::Exposure,
            LogType::Interaction => Table::Interaction,
            LogType::Joined => Table::Joined,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Request => "ods_request",
            Table::Exposure => "ods_exposure",
            Table::Interaction => "ods_interaction",
            Table::Joined => "ods_joined",
            Table::DeadLetter => "dead_letter",
        }
    }

    /// The column list of the INSERT, in the order rows are encoded.
    pub fn columns(self) -> String {
        let own = match self {
            Table::Request => {
                "ts, ts_ms, trace_id, span_id, parent_span_id, service, caller, api, uid, psid, \
                 status, latency_ms, host, idc, extra_keys, extra_values"
            }
            Table::Exposure => {
                "ts, ts_ms, mark_id, trace_id, uid, psid, ad_id, creative_id, position, platform, bid_price"
            }
            Table::Interaction => "ts, ts_ms, mark_id, trace_id, uid, action, extra_keys, extra_values",
            Table::Joined => {
                "joined_id, mark_id, ts, ts_ms, exposure_trace_id, uid, psid, ad_id, creative_id, \
                 position, platform, bid_price, interaction_ts, interaction_ts_ms, \
                 interaction_trace_id, action, delay_ms"
            }
            Table::DeadLetter => {
                return "ts, log_type, reason, error, raw, raw_size, _topic, _partition, _offset, _kafka_ts_ms"
                    .to_string()
            }
        };
        format!("{own}, {SOURCE_COLUMNS}")
    }
}
