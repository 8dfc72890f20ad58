//! A TCP stream for the SMTP client that sends what was written when the
//! client next waits for the server.
//!
//! lettre writes a message as two writes, each flushed — the body, then the
//! `.` line that ends it — before it reads the server's reply. On a socket
//! with `TCP_NODELAY` that is two segments and two wake-ups of the server
//! for one message. SMTP (without PIPELINING) never writes without reading
//! a reply next, so holding writes until the client reads loses no time and
//! sends each step of the dialogue as one segment: a flush only marks the
//! data ready, the next read (or shutdown) sends it first.
//!
//! Its [`Pipe`] lets the pool write commands lettre would not send without
//! waiting for each reply: what is put in the pipe goes out ahead of the
//! client's next write, with it, when the client next reads (SMTP
//! PIPELINING, see `pipelining`). Below any TLS layer, so only for a
//! plaintext connection.

use lettre::transport::smtp::client::AsyncTokioStream;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Held writes are sent at once past this size, whatever comes next.
const MAX_HELD: usize = 64 * 1024;

/// A TCP stream whose writes wait for the next read.
#[derive(Debug)]
pub struct CorkedStream {
    tcp: TcpStream,
    held: Vec<u8>,
    sent: usize,
    ahead: Pipe,
}

/// Bytes to send ahead of the stream's next write, when it next reads.
#[derive(Debug, Clone, Default)]
pub struct Pipe(Arc<Mutex<Vec<u8>>>);

impl Pipe {
    /// Queues `bytes` to go out before anything the client writes next.
    pub fn push(&self, bytes: &[u8]) {
        self.push_with(|ahead| ahead.extend_from_slice(bytes));
    }

    /// Queues what `write` appends to the buffer (which may hold bytes
    /// queued before), without building it elsewhere first.
    pub fn push_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        if let Ok(mut ahead) = self.0.lock() {
            write(&mut ahead);
        }
    }
}

impl CorkedStream {
    /// Wraps a connected socket.
    pub fn new(tcp: TcpStream) -> CorkedStream {
        CorkedStream {
            tcp,
            held: Vec::new(),
            sent: 0,
            ahead: Pipe::default(),
        }
    }

    /// The handle that writes ahead of the client on this stream.
    pub fn pipe(&self) -> Pipe {
        self.ahead.clone()
    }

    /// Moves what was put in the pipe to the end of what is held.
    fn take_ahead(&mut self) {
        if let Ok(mut ahead) = self.ahead.0.lock()
            && !ahead.is_empty()
        {
            self.held.append(&mut ahead);
        }
    }

    /// Sends everything held; ready when nothing is left.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for CorkedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_ahead();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CorkedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.take_ahead();
        if this.held.len() + buf.len() > MAX_HELD {
            ready!(this.poll_send_held(cx))?;
            if buf.len() > MAX_HELD {
                return Pin::new(&mut this.tcp).poll_write(cx, buf);
            }
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Marks the data ready; the next read or shutdown sends it.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_ahead();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for CorkedStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinHandle;

    /// A corked client connected to a local peer that runs `peer`.
    async fn connected<T, Fut>(peer: impl FnOnce(TcpStream) -> Fut) -> (CorkedStream, JoinHandle<T>)
    where
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        (CorkedStream::new(client), tokio::spawn(peer(accepted)))
    }

    #[tokio::test]
    async fn writes_go_out_together_when_the_client_reads() {
        let (mut client, server) = connected(|mut peer| async move {
            let mut first = vec![0u8; 64];
            let n = peer.read(&mut first).await.unwrap();
            peer.write_all(b"250 ok\r\n").await.unwrap();
            let mut rest = Vec::new();
            peer.read_to_end(&mut rest).await.unwrap();
            (first[..n].to_vec(), rest)
        })
        .await;
        client.write_all(b"body\r\n").await.unwrap();
        client.flush().await.unwrap();
        client.write_all(b".\r\n").await.unwrap();
        client.flush().await.unwrap();
        let mut reply = [0u8; 8];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"250 ok\r\n");
        client.write_all(b"QUIT\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let (first, rest) = server.await.unwrap();
        assert_eq!(
            first, b"body\r\n.\r\n",
            "both writes arrived before the reply was read"
        );
        assert_eq!(rest, b"QUIT\r\n", "shutdown sends what was held");
    }

    #[tokio::test]
    async fn what_the_pipe_holds_goes_out_first_with_the_next_write_when_the_client_reads() {
        let (mut client, server) = connected(|mut peer| async move {
            let mut first = vec![0u8; 128];
            let n = peer.read(&mut first).await.unwrap();
            peer.write_all(b"250 ok\r\n").await.unwrap();
            first.truncate(n);
            first
        })
        .await;
        let pipe = client.pipe();
        pipe.push(b"MAIL FROM:<a@b>\r\n");
        pipe.push(b"RCPT TO:<c@d>\r\n");
        client.write_all(b"DATA\r\n").await.unwrap();
        client.flush().await.unwrap();
        let mut reply = [0u8; 8];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(
            server.await.unwrap(),
            b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
            "the pipe's bytes first, then the write, in one go"
        );
    }

    #[tokio::test]
    async fn a_write_larger_than_the_hold_limit_is_sent_whole() {
        let (mut client, server) = connected(|mut peer| async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all
        })
        .await;
        let big: Vec<u8> = (0..MAX_HELD * 2 + 7).map(|i| (i % 251) as u8).collect();
        client.write_all(b"head").await.unwrap();
        client.write_all(&big).await.unwrap();
        client.write_all(b"tail").await.unwrap();
        client.shutdown().await.unwrap();
        let all = server.await.unwrap();
        assert_eq!(all.len(), 4 + big.len() + 4);
        assert_eq!(&all[..4], b"head");
        assert_eq!(&all[4..4 + big.len()], &big[..]);
        assert_eq!(&all[4 + big.len()..], b"tail");
    }
}
