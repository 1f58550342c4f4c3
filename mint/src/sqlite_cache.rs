//! The SQLite store's page cache size, set in the database file before cdk opens it.
//!
//! cdk-sqlite opens its connections with its own pragmas and none for the cache, so each gets
//! SQLite's default of 2 MiB. The size SQLite suggests to every connection that does not set its
//! own is kept in the file's header (`PRAGMA default_cache_size`), so the mint writes it there.

use std::path::Path;

use rusqlite::Connection;

/// Writes `mib` MiB, in pages of the file's page size, as the cache size every later connection
/// to the SQLite file at `path` uses; creates the file (in WAL mode, as cdk opens it) if needed.
pub fn suggest_cache_size(path: &Path, mib: u32) -> rusqlite::Result<()> {
    let connection = Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    let page_size: u32 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
    let pages = (u64::from(mib) << 20) / u64::from(page_size.max(512));
    connection.pragma_update(None, "default_cache_size", pages.min(i32::MAX as u64))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_connection_gets_the_suggested_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        suggest_cache_size(&path, 64).unwrap();
        let later = Connection::open(&path).unwrap();
        let pages: i64 = later
            .pragma_query_value(None, "cache_size", |row| row.get(0))
            .unwrap();
        assert_eq!(pages, 64 * 1024 * 1024 / 4096);
    }
}
