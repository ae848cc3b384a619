//! An in-process TCP fault proxy: every cluster route between two nats-server nodes
//! goes through one [`Link`], so a test can cut, delay or pause that link alone
//! (a partition is the cut of every link of one node).
//!
//! A [`Link`] forwards each accepted connection to one of its targets (the first that
//! accepts, starting after the last one used), so the same type also balances HTTP
//! between service replicas and moves on when a replica dies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a link does to the bytes crossing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards every byte at once.
    Open,
    /// Forwards every chunk after this delay.
    Delayed(Duration),
    /// Holds every byte (connections stay open, nothing crosses) until reopened.
    Paused,
    /// Closes every connection and refuses new ones until reopened.
    Cut,
}

/// One proxied link: a local listener forwarding to its targets under a [`Mode`].
pub struct Link {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    stop: CancellationToken,
}

impl Link {
    /// Listens on a free loopback port and forwards to `targets`.
    pub async fn start(targets: Vec<SocketAddr>) -> std::io::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Open);
        let stop = CancellationToken::new();
        let link = Link {
            addr,
            mode,
            stop: stop.clone(),
        };
        let modes = link.mode.clone();
        let targets = Arc::new(targets);
        let next = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else { continue };
                if *modes.borrow() == Mode::Cut {
                    drop(inbound);
                    continue;
                }
                let modes = modes.subscribe();
                let (targets, next, stop) = (targets.clone(), next.clone(), stop.clone());
                tokio::spawn(async move {
                    if let Some(outbound) = connect_any(&targets, &next).await {
                        relay(inbound, outbound, modes, stop).await;
                    }
                });
            }
        });
        Ok(link)
    }

    /// Where clients of the link connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the link's mode; a cut closes its open connections at once.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Connects to the first target that accepts, starting after the last one used.
async fn connect_any(targets: &[SocketAddr], next: &AtomicUsize) -> Option<TcpStream> {
    let start = next.fetch_add(1, Ordering::Relaxed);
    for i in 0..targets.len() {
        let target = targets[(start + i) % targets.len()];
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await {
            let _ = stream.set_nodelay(true);
            return Some(stream);
        }
    }
    None
}

/// Copies both ways under the link's mode until either side closes or the link is cut.
async fn relay(inbound: TcpStream, outbound: TcpStream, modes: watch::Receiver<Mode>, stop: CancellationToken) {
    let _ = inbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let one_way = |mut from: tokio::net::tcp::OwnedReadHalf,
                   mut to: tokio::net::tcp::OwnedWriteHalf,
                   mut modes: watch::Receiver<Mode>| async move {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let read = tokio::select! {
                read = from.read(&mut buffer) => read,
                _ = modes.wait_for(|m| *m == Mode::Cut) => return,
            };
            let n = match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            loop {
                let mode = *modes.borrow_and_update();
                match mode {
                    Mode::Cut => return,
                    Mode::Paused => {
                        if modes.changed().await.is_err() {
                            return;
                        }
                    }
                    Mode::Delayed(delay) => {
                        tokio::time::sleep(delay).await;
                        break;
                    }
                    Mode::Open => break,
                }
            }
            if to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = one_way(in_read, out_write, modes.clone()) => {}
        _ = one_way(out_read, in_write, modes) => {}
        _ = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, within: Duration) -> bool {
        if stream.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buffer = [0u8; 4];
        matches!(
            tokio::time::timeout(within, stream.read_exact(&mut buffer)).await,
            Ok(Ok(4))
        )
    }

    #[tokio::test]
    async fn a_cut_link_closes_its_connections_and_a_reopened_one_forwards_again() {
        let link = Link::start(vec![echo_server().await]).await.expect("link");
        let mut open = TcpStream::connect(link.addr()).await.expect("connect");
        assert!(
            round_trip(&mut open, Duration::from_secs(10)).await,
            "an open link forwards"
        );
        link.set(Mode::Cut);
        let mut buffer = [0u8; 4];
        let closed = tokio::time::timeout(Duration::from_secs(10), open.read(&mut buffer)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a cut closes the connection");
        link.set(Mode::Open);
        let mut again = TcpStream::connect(link.addr()).await.expect("connect");
        assert!(
            round_trip(&mut again, Duration::from_secs(10)).await,
            "a reopened link forwards"
        );
    }

    #[tokio::test]
    async fn a_paused_link_holds_bytes_until_it_is_reopened() {
        let link = Link::start(vec![echo_server().await]).await.expect("link");
        let mut stream = TcpStream::connect(link.addr()).await.expect("connect");
        assert!(round_trip(&mut stream, Duration::from_secs(10)).await);
        link.set(Mode::Paused);
        assert!(
            !round_trip(&mut stream, Duration::from_millis(300)).await,
            "paused: nothing crosses"
        );
        link.set(Mode::Open);
        let mut buffer = [0u8; 4];
        let late = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buffer)).await;
        assert!(matches!(late, Ok(Ok(4))), "the held bytes cross once reopened");
    }

    #[tokio::test]
    async fn a_balancing_link_moves_on_when_a_target_is_gone() {
        let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dead = gone.local_addr().expect("addr");
        drop(gone);
        let link = Link::start(vec![dead, echo_server().await]).await.expect("link");
        for _ in 0..3 {
            let mut stream = TcpStream::connect(link.addr()).await.expect("connect");
            assert!(round_trip(&mut stream, Duration::from_secs(10)).await);
        }
    }
}
