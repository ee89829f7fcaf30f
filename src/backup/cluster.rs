//! Finding a deployment's peers and where each shard lives.
//!
//! Qdrant lists its peers by their p2p URI only (`GET /cluster`) and itself reaches a peer's
//! REST API at "p2p host + its own HTTP port": so do we, with the configured URL's scheme
//! and port, unless the source lists every peer's URL (`peer_urls`).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::qdrant_api::rest::Replica;
use crate::qdrant_api::Server;

use super::source::SourceOptions;

/// One peer of a deployment.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// Its REST URL.
    pub url: String,
    /// Its client.
    pub server: Server,
}

/// A deployment as found at the start of a backup or restore.
#[derive(Clone, Debug)]
pub(crate) struct Deployment {
    /// The peer the source's URL names.
    pub entry: Server,
    /// Every peer by id.
    pub peers: BTreeMap<u64, Peer>,
}

/// Turns a client error into an upstream error.
pub(crate) fn upstream(e: String) -> Error {
    Error::Upstream(e)
}

/// `e`, said as `key` refused when Qdrant refused the key it was given: `bad_input` for a
/// key the caller passed (the restore's target), else still upstream (a configured key).
pub(crate) fn refused_key(e: Error, key: &str, callers: bool) -> Error {
    match e {
        Error::Upstream(m) if crate::qdrant_api::rest::key_refused(&m) => {
            let m = format!("Qdrant refused {key}: {m}");
            if callers {
                Error::bad_input(m)
            } else {
                Error::Upstream(m)
            }
        }
        e => e,
    }
}

fn client(url: &str, api_key: Option<&str>) -> Result<Server> {
    Server::new(url, api_key.map(str::to_string)).map_err(Error::bad_input)
}

/// The REST URL of a peer whose p2p URI is `p2p`: its host with `entry`'s scheme and port.
fn rest_url(entry: &url::Url, p2p: &str) -> Result<String> {
    let p = url::Url::parse(p2p)
        .map_err(|e| Error::Upstream(format!("peer URI `{p2p}` is not a URL: {e}")))?;
    let host = p
        .host_str()
        .ok_or_else(|| Error::Upstream(format!("peer URI `{p2p}` has no host")))?;
    let mut u = entry.clone();
    u.set_host(Some(host))
        .map_err(|e| Error::Upstream(format!("peer URI `{p2p}`: {e}")))?;
    Ok(u.as_str().trim_end_matches('/').to_string())
}

impl Deployment {
    /// Finds the peers of the deployment at `url` (any peer).
    pub(crate) async fn discover(
        url: &str,
        peer_urls: &[String],
        api_key: Option<&str>,
    ) -> Result<Self> {
        let entry = client(url, api_key)?;
        let info = entry.cluster().await.map_err(upstream)?;
        let mut peers = BTreeMap::new();
        if !info.enabled {
            peers.insert(
                0,
                Peer {
                    url: url.to_string(),
                    server: entry.clone(),
                },
            );
            return Ok(Deployment { entry, peers });
        }
        if peer_urls.is_empty() {
            let base = url::Url::parse(url).map_err(|e| Error::bad_input(e.to_string()))?;
            for (id, p2p) in &info.peers {
                let url = rest_url(&base, p2p)?;
                let server = client(&url, api_key)?;
                peers.insert(*id, Peer { url, server });
            }
        } else {
            // Each listed URL says which peer it is.
            for url in peer_urls {
                let server = client(url, api_key)?;
                let id = server.cluster().await.map_err(upstream)?.peer_id;
                peers.insert(
                    id,
                    Peer {
                        url: url.clone(),
                        server,
                    },
                );
            }
            if let Some(missing) = info.peers.keys().find(|id| !peers.contains_key(id)) {
                return Err(Error::bad_input(format!(
                    "peer {missing} ({}) is not among the source's peer_urls",
                    info.peers[missing]
                )));
            }
        }
        Ok(Deployment { entry, peers })
    }

    /// A single node (cluster mode off) is peer 0 until a collection says its id.
    pub(crate) fn single(&self) -> bool {
        self.peers.len() == 1 && self.peers.contains_key(&0)
    }

    /// The peer `id`, or an error naming it.
    pub(crate) fn peer(&self, id: u64) -> Result<&Peer> {
        self.peers
            .get(&id)
            .or_else(|| self.single().then(|| self.peers.get(&0)).flatten())
            .ok_or_else(|| Error::Upstream(format!("peer {id} is not in the cluster")))
    }

    /// Every replica of collection `name`, as the peers that answer report them: each
    /// peer's own shards with their states and point counts. A peer that does not answer
    /// is skipped here; its replicas are reported by the others without counts.
    pub(crate) async fn replicas(&self, name: &str) -> Result<(u32, Vec<Replica>)> {
        let mut shard_count = 0;
        let mut own: Vec<Replica> = Vec::new();
        let mut seen: Vec<Replica> = Vec::new();
        let mut last_error = None;
        for (id, peer) in &self.peers {
            match peer.server.collection_cluster(name).await {
                Ok(c) => {
                    shard_count = c.shard_count;
                    for mut r in c.replicas {
                        if *id == 0 {
                            // A single node: its shards are all its own.
                            r.peer_id = 0;
                        }
                        if r.points_count.is_some() {
                            own.push(r);
                        } else {
                            seen.push(r);
                        }
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        if shard_count == 0 {
            return Err(upstream(
                last_error.unwrap_or_else(|| format!("no peer reports collection `{name}`")),
            ));
        }
        for r in seen {
            if !own
                .iter()
                .any(|o| o.shard_id == r.shard_id && o.peer_id == r.peer_id)
            {
                own.push(r);
            }
        }
        own.sort_by_key(|r| (r.shard_id, r.peer_id));
        own.dedup_by_key(|r| (r.shard_id, r.peer_id));
        Ok((shard_count, own))
    }
}

/// A listing waits this long for a deployment that does not answer (a backup waits longer).
const LISTING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The configured peers of a source (for listing): each with whether it answers.
pub(crate) async fn peers_of(opts: &SourceOptions) -> Result<Vec<(u64, String, bool)>> {
    let discovery = Deployment::discover(
        &opts.url,
        &opts.peer_urls,
        opts.api_key.as_ref().map(|k| k.expose()),
    );
    let d = tokio::time::timeout(LISTING_WAIT, discovery)
        .await
        .map_err(|_| {
            Error::Upstream(format!(
                "{} did not answer GET /cluster within {} s",
                opts.url,
                LISTING_WAIT.as_secs()
            ))
        })??;
    let mut out = Vec::new();
    for (id, p) in &d.peers {
        out.push((*id, p.url.clone(), p.server.reachable().await));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_reached_at_its_p2p_host_and_the_entry_port() {
        let entry = url::Url::parse("https://10.0.0.5:6333").unwrap();
        assert_eq!(
            rest_url(&entry, "http://10.0.0.7:6335/").unwrap(),
            "https://10.0.0.7:6333"
        );
        assert!(rest_url(&entry, "not a uri").is_err());
    }
}
