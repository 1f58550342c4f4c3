//! Keeps the quote stream bounded: entries every consumer group has acknowledged are deleted.
//!
//! An entry may go once no group can need it again: it was delivered to every group (its id is
//! at most the group's last-delivered id) and is pending in none (its id is below the group's
//! oldest pending entry). The stream is trimmed to the smallest such bound over all groups
//! (`XTRIM MINID`), so an unacknowledged entry (an update waiting for its create, an entry a dead
//! consumer holds) is never deleted, whichever group holds it.

use redis::aio::ConnectionManager;
use redis::streams::{StreamInfoGroupsReply, StreamPendingReply};
use redis::AsyncCommands;

/// A stream id (`ms-seq`), compared numerically.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The lowest id any group may still need: its oldest pending entry, or else the last entry it
/// was delivered (kept, so the bound is an id that exists). None when no group exists.
async fn lowest_needed(
    redis: &mut ConnectionManager,
    stream: &str,
) -> redis::RedisResult<Option<String>> {
    let groups: StreamInfoGroupsReply = redis.xinfo_groups(stream).await?;
    let mut lowest: Option<((u64, u64), String)> = None;
    for group in groups.groups {
        let needed = match redis.xpending(stream, &group.name).await? {
            StreamPendingReply::Data(pending) => pending.start_id,
            StreamPendingReply::Empty => group.last_delivered_id,
            // A reply shape this code does not know: trim nothing rather than guess.
            _ => return Ok(None),
        };
        let Some(key) = parse_id(&needed) else {
            // Unreadable: trim nothing rather than guess.
            return Ok(None);
        };
        if lowest.as_ref().is_none_or(|(lowest, _)| key < *lowest) {
            lowest = Some((key, needed));
        }
    }
    Ok(lowest.map(|(_, id)| id))
}

/// Deletes the entries of `stream` that every consumer group has acknowledged; how many.
pub async fn trim_acknowledged(
    redis: &mut ConnectionManager,
    stream: &str,
) -> redis::RedisResult<u64> {
    let Some(bound) = lowest_needed(redis, stream).await? else {
        return Ok(0);
    };
    redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(&bound)
        .query_async(redis)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_by_time_then_sequence() {
        assert!(parse_id("10-2").unwrap() < parse_id("10-10").unwrap());
        assert!(parse_id("9-99").unwrap() < parse_id("10-0").unwrap());
        assert_eq!(parse_id("0-0"), Some((0, 0)));
        assert_eq!(parse_id("garbage"), None);
    }
}
