//! Who may call what: every operation declares the access it needs, once, and both
//! transports check API keys against that declaration.

use http::HeaderMap;

use crate::secret::Secret;

/// The access an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No key needed (version and health probes).
    Open,
    /// Reading points, collections and snapshots: the read-only key is enough.
    Read,
    /// Changing points or payload indexes: the full key.
    Write,
    /// Managing collections, aliases and snapshots: the full key.
    Manage,
}

/// Every operation the service offers, whatever the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // The names say what they do; `access` is the point of this list.
pub enum Operation {
    Version,
    Health,
    ListCollections,
    GetCollection,
    CollectionExists,
    CreateCollection,
    UpdateCollection,
    DeleteCollection,
    ListAliases,
    ListCollectionAliases,
    UpdateAliases,
    CreateFieldIndex,
    DeleteFieldIndex,
    Upsert,
    DeletePoints,
    GetPoints,
    SetPayload,
    OverwritePayload,
    DeletePayload,
    ClearPayload,
    UpdateBatch,
    Scroll,
    Count,
    Query,
    QueryBatch,
    Search,
    SearchBatch,
    ListSnapshots,
    CreateSnapshot,
    DeleteSnapshot,
    DownloadSnapshot,
    RecoverSnapshot,
    UploadSnapshot,
    StreamShardSnapshot,
    ListBackupSources,
    ListBackups,
    GetBackup,
    DownloadBackupShard,
    RunBackup,
    DeleteBackup,
    RestoreBackup,
    VerifyRepository,
    ListOperations,
    // `GET /operations/{id}`: named for the endpoint like its neighbours.
    #[allow(clippy::enum_variant_names)]
    GetOperation,
    /// `GET /metrics`.
    Metrics,
    /// The dashboard's files (the page asks for a key itself).
    Dashboard,
    /// What the presented key grants, so the dashboard shows only what it may do.
    Session,
    /// A call the service does not offer: it needs the full key, so probing for what
    /// exists tells an unauthenticated caller nothing.
    Unknown,
}

impl Operation {
    /// The access this operation needs.
    pub fn access(self) -> Access {
        use Operation::*;
        match self {
            Version | Health | Dashboard | Session => Access::Open,
            ListCollections
            | GetCollection
            | CollectionExists
            | ListAliases
            | ListCollectionAliases
            | GetPoints
            | Scroll
            | Count
            | Query
            | QueryBatch
            | Search
            | SearchBatch
            | ListSnapshots
            | DownloadSnapshot
            | ListBackupSources
            | ListBackups
            | GetBackup
            | DownloadBackupShard
            | ListOperations
            | GetOperation
            | Metrics => Access::Read,
            Upsert | DeletePoints | SetPayload | OverwritePayload | DeletePayload
            | ClearPayload | UpdateBatch | CreateFieldIndex | DeleteFieldIndex => Access::Write,
            CreateCollection | UpdateCollection | DeleteCollection | UpdateAliases
            | CreateSnapshot | DeleteSnapshot | RecoverSnapshot | UploadSnapshot
            | StreamShardSnapshot | RunBackup | DeleteBackup | RestoreBackup | VerifyRepository
            | Unknown => Access::Manage,
        }
    }
}

/// Why a call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No key was presented, or the key is wrong.
    Unauthenticated(&'static str),
    /// The read-only key was presented for a call that needs the full key.
    Forbidden(&'static str),
}

/// The configured keys (`service.api_key`, `service.read_only_api_key`).
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    full: Option<Secret>,
    read_only: Option<Secret>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    /// Keys as configured; none means no authentication at all.
    pub fn new(full: Option<Secret>, read_only: Option<Secret>) -> Self {
        ApiKeys { full, read_only }
    }

    /// The key a request presents: header `api-key`, else `authorization: Bearer <key>`
    /// (gRPC metadata arrives as the same HTTP/2 headers).
    pub fn presented(headers: &HeaderMap) -> Option<&str> {
        if let Some(v) = headers.get("api-key").and_then(|v| v.to_str().ok()) {
            return Some(v);
        }
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    }

    /// Whether `presented` may perform `op`.
    pub fn check(&self, presented: Option<&str>, op: Operation) -> Result<(), Denied> {
        if self.full.is_none() && self.read_only.is_none() {
            return Ok(());
        }
        let need = op.access();
        if need == Access::Open {
            return Ok(());
        }
        let Some(key) = presented else {
            return Err(Denied::Unauthenticated(
                "Must provide an API key or an Authorization bearer token",
            ));
        };
        let matches = |k: &Option<Secret>| {
            k.as_ref()
                .is_some_and(|k| constant_time_eq(k.expose().as_bytes(), key.as_bytes()))
        };
        if matches(&self.full) {
            return Ok(());
        }
        if matches(&self.read_only) {
            return match need {
                Access::Open | Access::Read => Ok(()),
                Access::Write => Err(Denied::Forbidden("Write access is required")),
                Access::Manage => Err(Denied::Forbidden("Global manage access is required")),
            };
        }
        Err(Denied::Unauthenticated("Invalid API key or JWT"))
    }

    /// Whether any key is configured.
    pub fn required(&self) -> bool {
        self.full.is_some() || self.read_only.is_some()
    }

    /// The most `presented` may do: [`Access::Manage`] for the full key (or when no key is
    /// configured), [`Access::Read`] for the read-only key, [`Access::Open`] otherwise.
    pub fn grants(&self, presented: Option<&str>) -> Access {
        if self.check(presented, Operation::CreateSnapshot).is_ok() {
            Access::Manage
        } else if self.check(presented, Operation::ListCollections).is_ok() {
            Access::Read
        } else {
            Access::Open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_grant_what_each_operation_declares() {
        let keys = ApiKeys::new(Some(Secret::new("full")), Some(Secret::new("ro")));
        assert_eq!(keys.check(None, Operation::Version), Ok(()));
        assert!(matches!(
            keys.check(None, Operation::Count),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            keys.check(Some("nope"), Operation::Count),
            Err(Denied::Unauthenticated(_))
        ));
        assert_eq!(keys.check(Some("ro"), Operation::Query), Ok(()));
        assert_eq!(keys.check(Some("ro"), Operation::DownloadSnapshot), Ok(()));
        assert!(matches!(
            keys.check(Some("ro"), Operation::Upsert),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            keys.check(Some("ro"), Operation::CreateSnapshot),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            keys.check(Some("ro"), Operation::Unknown),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(keys.check(Some("full"), Operation::CreateSnapshot), Ok(()));
        assert_eq!(keys.check(Some("ro"), Operation::Metrics), Ok(()));
        assert_eq!(keys.grants(Some("full")), Access::Manage);
        assert_eq!(keys.grants(Some("ro")), Access::Read);
        assert_eq!(keys.grants(Some("nope")), Access::Open);
        assert_eq!(ApiKeys::default().grants(None), Access::Manage);
        assert_eq!(
            ApiKeys::default().check(None, Operation::DeleteCollection),
            Ok(())
        );
    }

    #[test]
    fn keys_are_read_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(ApiKeys::presented(&h), None);
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(ApiKeys::presented(&h), Some("abc"));
        h.insert("api-key", "xyz".parse().unwrap());
        assert_eq!(ApiKeys::presented(&h), Some("xyz"));
    }
}
