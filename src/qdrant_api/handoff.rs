//! Handing archives to Qdrant peers by URL: a short-lived HTTP server from which a peer pulls
//! a shard archive once, for `PUT .../shards/{s}/snapshots/recover`.
//!
//! Why not an upload: Qdrant 1.19 spools an uploaded archive to a file on the peer's disk and
//! then reads it again to check its SHA-256 and unpack it, while a download by URL is
//! checked and unpacked as it arrives (one 107 MiB shard, by hand: 0.19-0.20 s of the peer's
//! CPU pulled with its checksum against 0.31-0.37 s uploaded, and no archive file written
//! beside the unpacked shard). A peer needs an address of ours it can reach: each listener is
//! bound, on a port the system picks, to the address this machine sends from towards that
//! peer, and serves only the paths it handed out, each a random 256-bit token good for one
//! request, while the offer lasts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use parking_lot::Mutex;
use tokio_util::task::AbortOnDropHandle;

use super::rest::CallError;

/// An archive's bytes as they are read from storage.
pub(crate) type Archive = Pin<Box<dyn Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

/// What is on offer, by token.
type Offers = Arc<Mutex<HashMap<String, Offer>>>;

/// One archive, until a peer takes it.
struct Offer {
    archive: Option<Archive>,
    len: u64,
}

/// The listeners of one restore, one per local address a peer is reached from; they stop
/// when it is dropped.
#[derive(Default)]
pub(crate) struct Handoff {
    offers: Offers,
    listeners: tokio::sync::Mutex<HashMap<IpAddr, (SocketAddr, AbortOnDropHandle<()>)>>,
    given_up: std::sync::atomic::AtomicBool,
}

/// An archive offered at one URL; dropping it withdraws the offer.
pub(crate) struct Ticket {
    url: String,
    token: String,
    offers: Offers,
}

impl Ticket {
    /// Where the peer pulls the archive from.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Withdraws the offer: the archive back if no peer has taken it.
    pub(crate) fn withdraw(self) -> Option<Archive> {
        self.offers
            .lock()
            .remove(&self.token)
            .and_then(|o| o.archive)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.offers.lock().remove(&self.token);
    }
}

impl Handoff {
    /// Offers `archive` (`len` bytes) to the peer whose REST API is at `peer_base`: a URL it
    /// can pull it from once. The archive comes back when it cannot be offered (no local
    /// address routes to the peer, no port can be bound, or [`Handoff::give_up`] was
    /// called): it is then for the caller to upload.
    pub(crate) async fn offer(
        &self,
        peer_base: &str,
        archive: Archive,
        len: u64,
    ) -> Result<Ticket, Archive> {
        if self.given_up.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(archive);
        }
        let mut token = [0u8; 32];
        let local = match self.listener_towards(peer_base).await {
            Ok(local) if getrandom::fill(&mut token).is_ok() => local,
            Ok(_) => return Err(archive),
            Err(e) => {
                tracing::warn!(peer = peer_base, error = %e, "cannot offer archives to this peer by URL; uploading them");
                return Err(archive);
            }
        };
        let token = hex::encode(token);
        self.offers.lock().insert(
            token.clone(),
            Offer {
                archive: Some(archive),
                len,
            },
        );
        Ok(Ticket {
            url: format!("http://{local}/{token}"),
            token,
            offers: Arc::clone(&self.offers),
        })
    }

    /// Offers nothing more: a peer could not pull what it was offered, and the others would
    /// likely fail alike (a firewall), each after its own timeout.
    pub(crate) fn give_up(&self) {
        self.given_up
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The address of the listener a peer at `peer_base` reaches, started on first use.
    async fn listener_towards(&self, peer_base: &str) -> Result<SocketAddr, CallError> {
        let ip = source_address(peer_base).await?;
        let mut listeners = self.listeners.lock().await;
        if let Some((addr, _)) = listeners.get(&ip) {
            return Ok(*addr);
        }
        let socket = tokio::net::TcpListener::bind((ip, 0))
            .await
            .map_err(|e| format!("no port to hand archives from on {ip}: {e}"))?;
        let addr = socket
            .local_addr()
            .map_err(|e| format!("the handoff listener on {ip}: {e}"))?;
        let app = axum::Router::new()
            .route("/{token}", axum::routing::get(take))
            .with_state(Arc::clone(&self.offers));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(socket, app).await {
                tracing::warn!(%addr, error = %e, "the handoff listener stopped");
            }
        });
        tracing::info!(%addr, "peers pull shard archives from this address while the restore runs");
        listeners.insert(ip, (addr, AbortOnDropHandle::new(task)));
        Ok(addr)
    }
}

/// `GET /{token}`: the offered archive, once; 404 for anything else. A `HEAD` (which axum
/// routes here too) answers the length without taking the archive.
async fn take(State(offers): State<Offers>, Path(token): Path<String>, method: Method) -> Response {
    let taken = {
        let mut offers = offers.lock();
        match offers.get_mut(&token) {
            Some(o) if o.archive.is_some() && method == Method::HEAD => Some((None, o.len)),
            Some(o) => o.archive.take().map(|a| (Some(a), o.len)),
            None => None,
        }
    };
    let Some((archive, len)) = taken else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::CONTENT_LENGTH, len.to_string()),
    ];
    match archive {
        Some(a) => (headers, Body::from_stream(a)).into_response(),
        None => (headers, Body::empty()).into_response(),
    }
}

/// The local address this machine sends from towards the host of `base` (no packet is
/// sent: connecting a UDP socket only picks the route).
async fn source_address(base: &str) -> Result<IpAddr, CallError> {
    let url = url::Url::parse(base).map_err(|e| format!("`{base}` is not a URL: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("`{base}` has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let peer = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolves to no address"))?;
    let any: SocketAddr = if peer.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let udp = std::net::UdpSocket::bind(any).map_err(|e| format!("no route to {peer}: {e}"))?;
    udp.connect(peer)
        .map_err(|e| format!("no route to {peer}: {e}"))?;
    udp.local_addr()
        .map(|a| a.ip())
        .map_err(|e| format!("no route to {peer}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(parts: &[&'static [u8]]) -> Archive {
        let parts: Vec<std::io::Result<bytes::Bytes>> = parts
            .iter()
            .map(|p| Ok(bytes::Bytes::from_static(p)))
            .collect();
        Box::pin(futures::stream::iter(parts))
    }

    async fn offered(handoff: &Handoff, peer: &str, parts: &[&'static [u8]], len: u64) -> Ticket {
        let offer = handoff.offer(peer, archive(parts), len).await;
        offer.ok().expect("offered")
    }

    #[tokio::test]
    async fn an_offer_is_served_once_with_its_length_then_gone() {
        let handoff = Handoff::default();
        let ticket = offered(&handoff, "http://127.0.0.1:6333", &[b"abc", b"defg"], 7).await;
        let http = reqwest::Client::new();
        let head = http.head(ticket.url()).send().await.unwrap();
        assert_eq!(head.status(), 200, "a HEAD does not take the archive");
        assert_eq!(head.headers()[reqwest::header::CONTENT_LENGTH], "7");
        let first = http.get(ticket.url()).send().await.unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(first.content_length(), Some(7));
        assert_eq!(first.bytes().await.unwrap().as_ref(), b"abcdefg");
        let again = http.get(ticket.url()).send().await.unwrap();
        assert_eq!(again.status(), 404);
        assert_eq!(http.head(ticket.url()).send().await.unwrap().status(), 404);
        assert!(
            ticket.withdraw().is_none(),
            "a taken archive cannot come back"
        );
    }

    #[tokio::test]
    async fn a_withdrawn_offer_returns_its_archive_and_answers_404() {
        let handoff = Handoff::default();
        let ticket = offered(&handoff, "http://127.0.0.1:1", &[b"x"], 1).await;
        let url = ticket.url().to_string();
        let (base, token) = url.rsplit_once('/').unwrap();
        assert_eq!(token.len(), 64);
        let http = reqwest::Client::new();
        let guessed = http.get(format!("{base}/{}", "0".repeat(64))).send();
        assert_eq!(guessed.await.unwrap().status(), 404);
        assert!(ticket.withdraw().is_some());
        assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    }

    #[tokio::test]
    async fn a_listener_is_bound_to_the_address_that_reaches_the_peer() {
        let handoff = Handoff::default();
        let ticket = offered(&handoff, "http://127.0.0.3:6333", &[], 0).await;
        let host = url::Url::parse(ticket.url()).unwrap();
        let ip: IpAddr = host.host_str().unwrap().parse().unwrap();
        assert!(ip.is_loopback(), "{ip}");
        let unknown = handoff.offer("http://no-such-host.invalid:6333", archive(&[]), 0);
        assert!(
            unknown.await.is_err(),
            "an unresolvable peer is offered nothing"
        );
    }

    #[tokio::test]
    async fn after_giving_up_archives_come_back_unoffered() {
        let handoff = Handoff::default();
        handoff.give_up();
        let offer = handoff.offer("http://127.0.0.1:6333", archive(&[b"x"]), 1);
        assert!(offer.await.is_err());
    }
}
