//! Wire and storage types of points: ids, vectors, distances and vector parameters.
//!
//! Vectors are deserialized with hand-written visitors: serde's `untagged` enums buffer every
//! float of a 768-dimensional vector into an intermediate tree first, which costs several
//! times the parse itself on the upsert hot path.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A point id: an unsigned integer or a UUID, echoed with its JSON type.
///
/// Ordering follows Qdrant: every numeric id sorts before every UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PointId {
    /// An unsigned 64-bit id (a JSON number).
    Num(u64),
    /// A UUID (a JSON string, echoed lowercase and hyphenated).
    Uuid(Uuid),
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{u}"),
        }
    }
}

impl Serialize for PointId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PointId::Num(n) => s.serialize_u64(*n),
            PointId::Uuid(u) => s.collect_str(&u.hyphenated()),
        }
    }
}

impl<'de> Deserialize<'de> for PointId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = PointId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a point id: an unsigned integer or a UUID string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PointId, E> {
                Ok(PointId::Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PointId, E> {
                u64::try_from(v).map(PointId::Num).map_err(|_| {
                    E::custom(format!(
                        "point id {v} is negative: ids are unsigned integers or UUIDs"
                    ))
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<PointId, E> {
                Err(E::custom(format!(
                    "point id {v} is not an unsigned integer or a UUID"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PointId, E> {
                Uuid::parse_str(v).map(PointId::Uuid).map_err(|_| {
                    E::custom(format!(
                        "point id `{v}` is not a valid UUID or an unsigned integer"
                    ))
                })
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// How two vectors are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distance {
    /// Cosine similarity; vectors are normalized on write, as Qdrant does.
    Cosine,
    /// Euclidean distance (smaller is closer).
    Euclid,
    /// Dot product.
    Dot,
    /// Manhattan (L1) distance (smaller is closer).
    Manhattan,
}

impl Distance {
    /// Whether a higher score means closer.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Distance::Cosine | Distance::Dot)
    }

    /// The score of `stored` against `query`, as the API reports it.
    pub fn score(self, query: &[f32], stored: &[f32]) -> f32 {
        match self {
            Distance::Cosine | Distance::Dot => dot(query, stored),
            Distance::Euclid => squared_l2(query, stored).sqrt(),
            Distance::Manhattan => l1(query, stored),
        }
    }
}

/// Dot product with independent accumulators so the compiler vectorizes it.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += (x - y) * (x - y);
    }
    sum
}

fn l1(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum()
}

/// Scales `v` to unit length in place (a zero vector stays zero).
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Parameters of one vector space, echoed back exactly as Qdrant's `VectorParams`.
///
/// Only keys the clients' `VectorParams` model allows are kept: the Python client rejects
/// any other key in `get_collection`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorParams {
    /// Dimension of the vectors.
    pub size: u64,
    /// Distance function.
    pub distance: Distance,
    /// Kept and echoed when the user set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<bool>,
    /// Kept and echoed when the user set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw_config: Option<serde_json::Value>,
    /// Kept and echoed when the user set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<serde_json::Value>,
}

/// A collection's vector spaces: one unnamed vector, or a map of named ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VectorsConfig {
    /// A single unnamed vector.
    Single(VectorParams),
    /// Named vectors.
    Named(BTreeMap<String, VectorParams>),
}

/// The internal name of the unnamed vector.
pub(crate) const DEFAULT_VECTOR: &str = "";

impl VectorsConfig {
    /// Every vector space by internal name (`""` for the unnamed vector).
    pub fn spaces(&self) -> Vec<(String, VectorParams)> {
        match self {
            VectorsConfig::Single(p) => vec![(DEFAULT_VECTOR.to_string(), p.clone())],
            VectorsConfig::Named(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// Parameters of the vector `name` (`""` for the unnamed one).
    pub fn get(&self, name: &str) -> Option<&VectorParams> {
        match self {
            VectorsConfig::Single(p) if name == DEFAULT_VECTOR => Some(p),
            VectorsConfig::Single(_) => None,
            VectorsConfig::Named(m) => m.get(name),
        }
    }
}

/// The vectors of one point in a request: a plain vector or named vectors.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum VectorInput {
    /// The unnamed vector.
    Plain(Vec<f32>),
    /// Named vectors.
    Named(BTreeMap<String, Vec<f32>>),
}

impl VectorInput {
    /// Converts into `(name, vector)` pairs with `""` for the unnamed vector.
    pub(crate) fn into_named(self) -> Vec<(String, Vec<f32>)> {
        match self {
            VectorInput::Plain(v) => vec![(DEFAULT_VECTOR.to_string(), v)],
            VectorInput::Named(m) => m.into_iter().collect(),
        }
    }
}

/// Deserializes a `[f32]` without intermediate buffering.
struct FloatSeq(Vec<f32>);

impl<'de> Deserialize<'de> for FloatSeq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FloatSeq;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FloatSeq, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).max(16));
                while let Some(x) = seq.next_element::<f32>()? {
                    v.push(x);
                }
                Ok(FloatSeq(v))
            }
        }
        d.deserialize_seq(V)
    }
}

impl<'de> Deserialize<'de> for VectorInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VectorInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a vector (list of numbers) or a map of named vectors")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VectorInput, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).max(16));
                while let Some(x) = seq.next_element::<f32>()? {
                    v.push(x);
                }
                Ok(VectorInput::Plain(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<VectorInput, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let FloatSeq(v) = map.next_value()?;
                    out.insert(k, v);
                }
                Ok(VectorInput::Named(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The vectors of a `Batch`: a list of plain vectors or, per name, a list of vectors.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BatchVectors {
    /// One unnamed vector per point.
    Plain(Vec<Vec<f32>>),
    /// For each name, one vector per point.
    Named(BTreeMap<String, Vec<Vec<f32>>>),
}

struct FloatSeqSeq(Vec<Vec<f32>>);

impl<'de> Deserialize<'de> for FloatSeqSeq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FloatSeqSeq;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of vectors")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FloatSeqSeq, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(FloatSeq(x)) = seq.next_element()? {
                    v.push(x);
                }
                Ok(FloatSeqSeq(v))
            }
        }
        d.deserialize_seq(V)
    }
}

impl<'de> Deserialize<'de> for BatchVectors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BatchVectors;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of vectors or a map of named vector lists")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BatchVectors, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(FloatSeq(x)) = seq.next_element()? {
                    v.push(x);
                }
                Ok(BatchVectors::Plain(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BatchVectors, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let FloatSeqSeq(v) = map.next_value()?;
                    out.insert(k, v);
                }
                Ok(BatchVectors::Named(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON object payload.
pub type Payload = serde_json::Map<String, serde_json::Value>;

/// One point to write, already validated against the collection's vector spaces.
#[derive(Clone, Debug, PartialEq)]
pub struct PointWrite {
    /// The point's id.
    pub id: PointId,
    /// `(name, vector)` pairs; Cosine vectors are already normalized.
    pub vectors: Vec<(String, Vec<f32>)>,
    /// The payload, if any.
    pub payload: Option<Payload>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_json_type() {
        let ids: Vec<PointId> =
            serde_json::from_str(r#"[1, "5C56C793-69F3-4FBF-87E6-C4BF54C28C26"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&ids).unwrap(),
            r#"[1,"5c56c793-69f3-4fbf-87e6-c4bf54c28c26"]"#
        );
        assert!(serde_json::from_str::<PointId>("-1").is_err());
        assert!(serde_json::from_str::<PointId>("1.5").is_err());
        assert!(serde_json::from_str::<PointId>(r#""abc""#).is_err());
        assert!(PointId::Num(u64::MAX) < PointId::Uuid(Uuid::nil()));
    }

    #[test]
    fn vectors_parse_plain_and_named() {
        let v: VectorInput = serde_json::from_str("[1, 2.5]").unwrap();
        assert_eq!(v, VectorInput::Plain(vec![1.0, 2.5]));
        let v: VectorInput = serde_json::from_str(r#"{"a": [1]}"#).unwrap();
        assert_eq!(v.into_named(), vec![("a".to_string(), vec![1.0])]);
        let b: BatchVectors = serde_json::from_str("[[1],[2]]").unwrap();
        assert_eq!(b, BatchVectors::Plain(vec![vec![1.0], vec![2.0]]));
    }

    #[test]
    fn distances_score_as_qdrant_reports_them() {
        let a = [1.0, 0.0];
        let b = [0.0, 1.0];
        assert_eq!(Distance::Dot.score(&a, &b), 0.0);
        assert!((Distance::Euclid.score(&a, &b) - 2f32.sqrt()).abs() < 1e-6);
        assert_eq!(Distance::Manhattan.score(&a, &b), 2.0);
        let long: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let naive: f32 = long.iter().map(|x| x * x).sum();
        assert_eq!(dot(&long, &long), naive);
    }

    #[test]
    fn vectors_config_echoes_only_known_keys() {
        let c: VectorsConfig = serde_json::from_str(r#"{"size":4,"distance":"Cosine"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"size":4,"distance":"Cosine"}"#
        );
        let named: VectorsConfig =
            serde_json::from_str(r#"{"img":{"size":2,"distance":"Dot"}}"#).unwrap();
        assert!(named.get("img").is_some());
        assert!(
            serde_json::from_str::<VectorsConfig>(r#"{"size":4,"distance":"cosine"}"#).is_err()
        );
    }
}
