//! The API's error shape for the answers hyper writes itself.
//!
//! When a request cannot even be parsed (a malformed request line or
//! header, a URI over 65,534 bytes, more than 100 headers or a head over
//! hyper's buffer), hyper answers 400, 414 or 431 on its own, with an empty
//! body, before any router or middleware sees the request, and closes the
//! connection. [`JsonErrorListener`] wraps each connection so that those
//! answers, and only those, leave with the API's JSON error body instead.
//!
//! Recognising them is exact: hyper's automatic answer is the last thing it
//! writes on the connection, and is the only head the server writes with
//! `content-length: 0` and one of those statuses (every error of the API
//! has a JSON body, and no body the server writes contains a raw CRLF,
//! which JSON escapes).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::error::{ErrorBody, ErrorDetail};

/// hyper's automatic answers: the status line, then our code and message.
const AUTOMATIC: [(&[u8], &str, &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\n",
        "bad_request",
        "the request is not valid HTTP/1.1: its request line or a header is malformed",
    ),
    (
        b"HTTP/1.1 414 URI Too Long\r\n",
        "uri_too_long",
        "the request's URI is longer than 65534 bytes; send long values in a JSON body",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        "headers_too_large",
        "the request's head is too large: at most 100 headers, about 400 KiB in all",
    ),
];

/// What follows the status line in hyper's automatic answer, before its
/// `date` header.
const EMPTY: &[u8] = b"connection: close\r\ncontent-length: 0\r\n";

/// `date: ` and an IMF-fixdate (29 bytes), then the end of the head.
const DATE_LEN: usize = b"date: ".len() + 29 + 4;

/// A TCP listener whose connections answer even hyper's own parse errors
/// in the API's JSON error shape; what `rdq serve` serves with.
#[derive(Debug)]
pub struct JsonErrorListener(TcpListener);

impl JsonErrorListener {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener) -> JsonErrorListener {
        JsonErrorListener(listener)
    }
}

impl axum::serve::Listener for JsonErrorListener {
    type Io = JsonErrorIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (JsonErrorIo::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection whose writes pass through unchanged, except hyper's
/// automatic error answer, which is replaced by the same status with a JSON
/// body (see the [module docs](self)).
#[derive(Debug)]
pub struct JsonErrorIo<T> {
    inner: T,
    /// A replacement answer still to write, and how much of it is written.
    pending: Vec<u8>,
    written: usize,
}

impl<T> JsonErrorIo<T> {
    /// Wraps a connection.
    pub fn new(inner: T) -> JsonErrorIo<T> {
        JsonErrorIo {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrorIo<T> {
    /// Writes what remains of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// Where hyper's automatic answer starts in `buf`, and which one it is.
fn find_automatic(buf: &[u8]) -> Option<(usize, usize)> {
    if !buf.ends_with(b"\r\n\r\n") || buf.len() < DATE_LEN {
        return None;
    }
    AUTOMATIC.iter().enumerate().find_map(|(i, (line, _, _))| {
        let start = buf.len().checked_sub(line.len() + EMPTY.len() + DATE_LEN)?;
        let head = &buf[start..];
        (head.starts_with(line)
            && head[line.len()..].starts_with(EMPTY)
            && head[line.len() + EMPTY.len()..].starts_with(b"date: "))
        .then_some((start, i))
    })
}

/// The JSON answer that replaces automatic answer `which`, whose head is
/// `head` (for its date).
fn replacement(which: usize, head: &[u8]) -> Vec<u8> {
    let (line, code, message) = AUTOMATIC[which];
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code,
            message: message.to_owned(),
        },
    })
    .unwrap_or_default();
    let date = &head[line.len() + EMPTY.len()..head.len() - 2];
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    out.extend_from_slice(line);
    out.extend_from_slice(b"connection: close\r\ncontent-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrorIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrorIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        match find_automatic(buf) {
            // Whatever comes before it first, unchanged.
            Some((start, _)) if start > 0 => {
                Pin::new(&mut this.inner).poll_write(cx, &buf[..start])
            }
            Some((_, which)) => {
                this.pending = replacement(which, buf);
                this.written = 0;
                // Taken: the rest is written here, by flush, or shutdown.
                if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(buf.len()))
            }
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Wed, 02 Dec 2026 02:42:20 GMT\r\n\r\n";

    #[test]
    fn only_hyper_automatic_answers_are_recognised() {
        let auto = format!(
            "HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}"
        );
        assert_eq!(find_automatic(auto.as_bytes()), Some((0, 1)));
        let after = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{DATE}{{}}{auto}");
        assert_eq!(
            find_automatic(after.as_bytes()),
            Some((after.len() - auto.len(), 1))
        );
        for other in [
            format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n{DATE}"),
            format!("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}"),
            "{\"args\": \"HTTP/1.1 400 Bad Request\"}".to_owned(),
        ] {
            assert_eq!(find_automatic(other.as_bytes()), None, "{other:?}");
        }
        let json = replacement(1, auto.as_bytes());
        let text = String::from_utf8(json).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(
            head.ends_with("date: Wed, 02 Dec 2026 02:42:20 GMT"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["error"]["code"], "uri_too_long");
    }
}
