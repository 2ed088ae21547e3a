//! A TCP proxy on loopback between a server and PostgreSQL, which a test can
//! cut (every connection closed, new ones closed at once) and restore.

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) struct Proxy {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream`, passing traffic.
    pub(crate) async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(watch::Sender::new(true));
        let state = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !*state.borrow() {
                    drop(client);
                    continue;
                }
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up, task }
    }

    /// Closes every connection, and each new one at once.
    pub(crate) fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Passes traffic again.
    pub(crate) fn restore(&self) {
        self.up.send_replace(true);
    }

    /// `url` (a PostgreSQL URL) through this proxy.
    pub(crate) fn url_for(&self, url: &str) -> String {
        let config = tokio_postgres::Config::from_str(url).unwrap();
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        let db = config.get_dbname().unwrap_or("test");
        format!("postgres://{user}{password}@{}/{db}", self.addr)
    }
}

/// The address a PostgreSQL URL points at (first host, TCP).
pub(crate) fn upstream_of(url: &str) -> SocketAddr {
    use std::net::ToSocketAddrs as _;
    let config = tokio_postgres::Config::from_str(url).unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host.as_str(), port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
