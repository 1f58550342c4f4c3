//! Small files the pool must never leave half-written (the quote journal, the epoch book).

use std::io::Write;
use std::path::Path;

/// Writes a temporary file, syncs it and renames it over `path` (creating its directory): a
/// crash leaves the old contents or the new, never half of each.
pub fn replace_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
