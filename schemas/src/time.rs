//! Millisecond timestamps: `YYYY-MM-DD HH:MM:SS.mmm` (UTC) or epoch milliseconds.
