//! The quote publisher's counters on `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::publisher::PublisherMetrics;

/// Read at each scrape: the publisher keeps these numbers for its own work (the buffer depth,
/// when to log Redis going down or up), so they stay its atomics rather than becoming metrics.
#[derive(Debug)]
pub struct QuoteCollector(pub Arc<PublisherMetrics>);

impl Collector for QuoteCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let quotes = &self.0;
        let counters = [
            (
                "quotes_published",
                "Quote messages appended to Redis.",
                quotes.published.load(Ordering::Relaxed),
            ),
            (
                "quotes_dropped",
                "Quote messages dropped on buffer overflow.",
                quotes.overflowed.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "quotes_buffered",
                "Quote messages waiting for Redis.",
                quotes.buffered(),
            ),
            (
                "redis_up",
                "1 while Redis accepts quote messages.",
                u64::from(quotes.redis_up.load(Ordering::Relaxed)),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
