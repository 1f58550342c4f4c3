//! Rejected shares (and refused channel opens) counted by reason, for `/stats` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

/// Counts by reason: an Sv2 error code, or `open-channel:<code>`. The pool writes every reason
/// itself, so the set is small and fixed; nothing a miner sends becomes a reason.
///
/// A map rather than a prometheus-client `Family` because `/stats` lists every reason, and a
/// `Family` cannot be iterated.
#[derive(Debug, Default)]
pub struct Rejections {
    by_reason: Mutex<BTreeMap<String, u64>>,
}

impl Rejections {
    pub fn record(&self, reason: &str) {
        *self
            .by_reason
            .lock()
            .expect("metrics lock")
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    pub fn by_reason(&self) -> BTreeMap<String, u64> {
        self.by_reason.lock().expect("metrics lock").clone()
    }
}

impl Collector for Rejections {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let by_reason = self.by_reason();
        let mut family = encoder.encode_descriptor(
            "shares_rejected",
            "Shares rejected, by Sv2 error code.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (reason, count) in &by_reason {
            let label = [("reason", reason.as_str())];
            ConstCounter::new(*count).encode(family.encode_family(&label)?)?;
        }
        Ok(())
    }
}
