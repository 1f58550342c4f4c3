//! Newline-delimited protocols (Stratum V1): lines read with a cap, so a hostile peer cannot make
//! us buffer without bound.

use thiserror::Error;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

/// Why a peer's input ends its connection.
#[derive(Debug, Error)]
pub enum LineError {
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the next line (without its newline); `None` at end of stream. A line longer than `max`
/// is an error without reading the rest.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<String>, LineError> {
    let mut line = Vec::new();
    let read = reader
        .take(max as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() > max {
        return Err(LineError::TooLong(max));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| LineError::NotUtf8)
}

/// Reads lines into `lines` until the end of the stream, the first error (sent too), or the
/// receiver is gone. Run it as a task of its own: reading a line is not cancellation safe, so it
/// must never be one branch of a `select!`.
pub async fn read_lines<R: AsyncRead + Unpin>(
    reader: R,
    max: usize,
    lines: mpsc::Sender<Result<String, LineError>>,
) {
    let mut reader = BufReader::new(reader);
    loop {
        let line = match read_line(&mut reader, max).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => return,
            Err(error) => Err(error),
        };
        let last = line.is_err();
        if lines.send(line).await.is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_capped() {
        let input = format!("short\r\n{}\nafter\n", "x".repeat(100));
        let mut reader = tokio::io::BufReader::new(input.as_bytes());
        assert_eq!(
            read_line(&mut reader, 50).await.unwrap().as_deref(),
            Some("short")
        );
        assert!(matches!(
            read_line(&mut reader, 50).await,
            Err(LineError::TooLong(50))
        ));
        let mut reader = tokio::io::BufReader::new(&b"\xff\xfe\n"[..]);
        assert!(matches!(
            read_line(&mut reader, 50).await,
            Err(LineError::NotUtf8)
        ));
        let mut reader = tokio::io::BufReader::new(&b""[..]);
        assert!(read_line(&mut reader, 50).await.unwrap().is_none());
    }
}
