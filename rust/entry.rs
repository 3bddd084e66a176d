//! One index entry as queries return it, and the order queries return.

/// An indexed message location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub queue_id: u32,
    pub offset: u64,
    pub size: u32,
    pub timestamp_ms: u64,
}

/// Sorts query hits into API order and keeps at most `max_count`.
///
/// `hits` must arrive newest put first (both file forms walk in that order);
/// the stable sort by descending timestamp then keeps "later put first" among
/// equal timestamps.
pub(crate) fn finish_query(mut hits: Vec<Entry>, max_count: usize) -> Vec<Entry> {
    hits.sort_by_key(|e| std::cmp::Reverse(e.timestamp_ms));
    hits.truncate(max_count);
    hits
}

/// Checks the arguments every query takes.
pub(crate) fn check_query_args(begin_ms: u64, end_ms: u64, max_count: usize) -> crate::Result<()> {
    if begin_ms > end_ms {
        return Err(crate::Error::invalid(
            "begin_ms",
            format!("begin_ms ({begin_ms}) is after end_ms ({end_ms})"),
        ));
    }
    if max_count < 1 {
        return Err(crate::Error::invalid(
            "max_count",
            "max_count must be at least 1",
        ));
    }
    Ok(())
}
