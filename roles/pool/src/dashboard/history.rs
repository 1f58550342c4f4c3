//! The dashboard's history in Redis, beside the quote stream: kept across pool restarts, bounded
//! by key expiry. Redis rather than a file of the pool's own because the stack already runs it
//! durably (AOF, see docs), several pools on one stream keep theirs apart by their publisher id,
//! and a flush is a handful of pipelined writes every few seconds, never on a share's path.
//!
//! Layout, under `<stream>:dashboard:<publisher id>`:
//! - `:keys`, `:workers`: sorted sets of the keys and `key/worker`s, scored by last activity;
//! - `:totals:<scope>`: hash with `totals` (and for a key `epochs`) as JSON;
//! - `:series:<scope>`: hash of bucket start → proven hashes;
//! - `:blocks`: list of the latest found blocks, newest first.
//!
//! `<scope>` is `pool`, `key:<pubkey>` or `worker:<pubkey>/<worker>`.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use thiserror::Error;

use super::book::{Book, SavedScope, Scope, ScopeChanges, Totals, RETENTION_SECS};
use super::FoundBlock;

/// Blocks the store keeps.
pub const BLOCKS_KEPT: usize = 50;

#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored {what} is not valid: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Clone)]
pub struct HistoryStore {
    client: redis::Client,
    prefix: String,
}

impl HistoryStore {
    pub fn new(client: redis::Client, stream: &str, publisher_id: &str) -> Self {
        Self {
            client,
            prefix: format!("{stream}:dashboard:{publisher_id}"),
        }
    }

    fn scope_name(scope: &Scope) -> String {
        match scope {
            Scope::Pool => "pool".to_owned(),
            Scope::Key(key) => format!("key:{key}"),
            Scope::Worker { key, name } => format!("worker:{key}/{name}"),
        }
    }

    fn key(&self, kind: &str, scope: &Scope) -> String {
        format!("{}:{kind}:{}", self.prefix, Self::scope_name(scope))
    }

    fn index(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, HistoryError> {
        Ok(self.client.get_multiplexed_async_connection().await?)
    }

    /// The book and the found blocks as the last flush left them.
    pub async fn load(&self, now: u64) -> Result<(Book, Vec<FoundBlock>), HistoryError> {
        let mut redis = self.connection().await?;
        let since = now.saturating_sub(RETENTION_SECS);
        let keys: Vec<String> = redis
            .zrangebyscore(self.index("keys"), since, "+inf")
            .await?;
        let workers: Vec<String> = redis
            .zrangebyscore(self.index("workers"), since, "+inf")
            .await?;
        let mut scopes = vec![Scope::Pool];
        scopes.extend(keys.into_iter().map(Scope::Key));
        scopes.extend(workers.iter().filter_map(|member| {
            let (key, name) = member.split_once('/')?;
            Some(Scope::Worker {
                key: key.to_owned(),
                name: name.to_owned(),
            })
        }));
        let mut pipe = redis::pipe();
        for scope in &scopes {
            pipe.hgetall(self.key("totals", scope))
                .hgetall(self.key("series", scope));
        }
        let fetched: Vec<BTreeMap<String, String>> = pipe.query_async(&mut redis).await?;
        let mut saved = Vec::new();
        for (scope, pair) in scopes.into_iter().zip(fetched.chunks(2)) {
            let (totals, series) = (&pair[0], &pair[1]);
            let Some(totals_json) = totals.get("totals") else {
                continue; // expired, or never flushed
            };
            let what = Self::scope_name(&scope);
            let corrupt = |source| HistoryError::Corrupt {
                what: what.clone(),
                source,
            };
            let totals: Totals = serde_json::from_str(totals_json).map_err(corrupt)?;
            let epochs = match pair[0].get("epochs") {
                Some(json) => serde_json::from_str(json).map_err(corrupt)?,
                None => BTreeMap::new(),
            };
            let buckets = series
                .iter()
                .filter_map(|(start, hashes)| Some((start.parse().ok()?, hashes.parse().ok()?)))
                .collect();
            saved.push(SavedScope {
                scope,
                totals,
                epochs,
                buckets,
            });
        }
        let blocks: Vec<String> = redis.lrange(self.index("blocks"), 0, -1).await?;
        let blocks = blocks
            .iter()
            .map(|json| serde_json::from_str(json))
            .collect::<Result<_, _>>()
            .map_err(|source| HistoryError::Corrupt {
                what: "blocks".to_owned(),
                source,
            })?;
        Ok((Book::restored(saved, now), blocks))
    }

    /// Writes `changes` and `new_blocks` (oldest first) in one pipeline; each scope's keys
    /// expire [`RETENTION_SECS`] after its last activity.
    pub async fn save(
        &self,
        changes: &[ScopeChanges],
        new_blocks: &[FoundBlock],
        now: u64,
    ) -> Result<(), HistoryError> {
        if changes.is_empty() && new_blocks.is_empty() {
            return Ok(());
        }
        let mut redis = self.connection().await?;
        let mut pipe = redis::pipe();
        let ttl = RETENTION_SECS as i64;
        for change in changes {
            let totals_key = self.key("totals", &change.scope);
            let series_key = self.key("series", &change.scope);
            if let Some(totals) = &change.totals {
                let json = serde_json::to_string(totals).expect("totals serialize");
                pipe.hset(&totals_key, "totals", json).ignore();
            }
            if let Some(epochs) = &change.epochs {
                let json = serde_json::to_string(epochs).expect("epochs serialize");
                pipe.hset(&totals_key, "epochs", json).ignore();
            }
            let values: Vec<(String, String)> = change
                .series
                .values
                .iter()
                .map(|(start, hashes)| (start.to_string(), hashes.to_string()))
                .collect();
            if !values.is_empty() {
                pipe.hset_multiple(&series_key, &values).ignore();
            }
            if !change.series.expired.is_empty() {
                pipe.hdel(&series_key, &change.series.expired).ignore();
            }
            pipe.expire(&totals_key, ttl)
                .ignore()
                .expire(&series_key, ttl)
                .ignore();
            match &change.scope {
                Scope::Pool => {}
                Scope::Key(key) => {
                    pipe.zadd(self.index("keys"), key, change.last_active)
                        .ignore();
                }
                Scope::Worker { key, name } => {
                    pipe.zadd(
                        self.index("workers"),
                        format!("{key}/{name}"),
                        change.last_active,
                    )
                    .ignore();
                }
            }
        }
        let forgotten = now.saturating_sub(RETENTION_SECS);
        for index in ["keys", "workers"] {
            pipe.zrembyscore(self.index(index), "-inf", forgotten)
                .ignore();
        }
        for block in new_blocks {
            let json = serde_json::to_string(block).expect("blocks serialize");
            pipe.lpush(self.index("blocks"), json).ignore();
        }
        pipe.ltrim(self.index("blocks"), 0, BLOCKS_KEPT as isize - 1)
            .ignore();
        pipe.query_async::<()>(&mut redis).await?;
        Ok(())
    }
}
