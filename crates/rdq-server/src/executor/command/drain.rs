//! Capped output: read a pipe to its end, keep the first and the last half
//! of the cap, count everything.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes asked for per read: a pipe holds 64 KiB, so a few reads empty it.
const CHUNK: usize = 32 * 1024;

/// What was kept of one stream.
#[derive(Debug)]
pub(super) struct Capped {
    /// The first `head_cap` bytes.
    head: Vec<u8>,
    head_cap: usize,
    /// The last bytes after the head; between `tail_cap` and `2 * tail_cap`
    /// long, trimmed to `tail_cap` when done (amortized copying).
    tail: Vec<u8>,
    tail_cap: usize,
    /// Every byte read.
    total: u64,
}

impl Capped {
    /// A buffer keeping at most `cap` bytes (`cap > 0`).
    pub(super) fn new(cap: usize) -> Self {
        let head_cap = cap / 2;
        Capped {
            head: Vec::new(),
            head_cap,
            tail: Vec::new(),
            tail_cap: cap - head_cap,
            total: 0,
        }
    }

    /// Takes in the next bytes of the stream.
    pub(super) fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.head_cap {
            let n = bytes.len().min(self.head_cap - self.head.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            self.tail
                .extend_from_slice(&bytes[bytes.len() - self.tail_cap..]);
        } else {
            self.tail.extend_from_slice(bytes);
            if self.tail.len() > 2 * self.tail_cap {
                self.tail.drain(..self.tail.len() - self.tail_cap);
            }
        }
    }

    /// Every byte read, kept or not.
    pub(super) fn total(&self) -> u64 {
        self.total
    }

    /// The kept text (lossy UTF-8), with a marker line where bytes were left
    /// out: `\n[... N bytes omitted ...]\n`.
    pub(super) fn text(&self) -> String {
        let tail = &self.tail[self.tail.len().saturating_sub(self.tail_cap)..];
        let kept = (self.head.len() + tail.len()) as u64;
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if kept < self.total {
            let omitted = self.total - kept;
            out.push_str(&format!("\n[... {omitted} bytes omitted ...]\n"));
        }
        out.push_str(&String::from_utf8_lossy(tail));
        out
    }
}

/// Reads `pipe` to its end into `buf`. A read error (none is expected from
/// a pipe) ends the stream like EOF does: what was read is kept.
pub(super) async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>, buf: &mut Capped) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => buf.push(&chunk[..n]),
            Err(e) => {
                tracing::debug!(error = %e, "reading a command's output failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(cap: usize, pushes: &[&[u8]]) -> Capped {
        let mut c = Capped::new(cap);
        for p in pushes {
            c.push(p);
        }
        c
    }

    #[test]
    fn under_the_cap_everything_is_kept() {
        let c = capped(10, &[b"abc", b"defg", b"hij"]);
        assert_eq!(c.text(), "abcdefghij");
        assert_eq!(c.total(), 10);
        assert_eq!(capped(10, &[]).text(), "");
    }

    #[test]
    fn over_the_cap_head_and_tail_with_a_marker() {
        let data: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
        // One push, many small pushes, and uneven pushes give the same text.
        let one = capped(10, &[&data]);
        let small: Vec<&[u8]> = data.chunks(1).collect();
        let uneven: Vec<&[u8]> = data.chunks(7).collect();
        let want = format!(
            "{}\n[... 90 bytes omitted ...]\n{}",
            String::from_utf8_lossy(&data[..5]),
            String::from_utf8_lossy(&data[95..])
        );
        for c in [one, capped(10, &small), capped(10, &uneven)] {
            assert_eq!(c.text(), want);
            assert_eq!(c.total(), 100);
        }
    }

    #[test]
    fn odd_and_tiny_caps() {
        assert_eq!(
            capped(1, &[b"xyz"]).text(),
            "\n[... 2 bytes omitted ...]\nz"
        );
        assert_eq!(
            capped(3, &[b"abcdef"]).text(),
            "a\n[... 3 bytes omitted ...]\nef"
        );
        assert_eq!(capped(1, &[b"q"]).text(), "q");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(capped(10, &[b"a\xffb"]).text(), "a\u{fffd}b");
    }
}
