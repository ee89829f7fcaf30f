//! Protobuf messages to service types and back: ids, payload values, vectors, filters and
//! selectors. Anything the service cannot represent is `INVALID_ARGUMENT`, named.
// Deprecated proto fields (`data`, `on_disk`, ...) are what older clients still send
// and read: handling them is deliberate.
#![allow(deprecated)]

use std::collections::HashMap;

use ::qdrant_client::qdrant as pb;
use pb::condition::ConditionOneOf;
use pb::point_id::PointIdOptions;
use pb::r#match::MatchValue;
use pb::value::Kind;
use serde_json::{Map, Number, Value};
use tonic::Status;

use crate::collection::filter::{
    Condition, FieldCondition, Filter, KeyRef, Match, OneOrMany, Range,
};
use crate::collection::points::{PointView, VectorSelect};
use crate::collection::types::{Payload, PointId};
use crate::collection::{PointInput, PointSelector};
use crate::service::points::{PayloadSelector, ReadOptions, VectorShape};

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// A point id from the wire.
pub(crate) fn point_id(id: Option<pb::PointId>) -> Result<PointId, Status> {
    match id.and_then(|i| i.point_id_options) {
        Some(PointIdOptions::Num(n)) => Ok(PointId::Num(n)),
        Some(PointIdOptions::Uuid(s)) => uuid::Uuid::parse_str(&s)
            .map(PointId::Uuid)
            .map_err(|_| invalid(format!("point id `{s}` is not a valid UUID"))),
        None => Err(invalid("point id is missing")),
    }
}

/// A point id for the wire.
pub(crate) fn point_id_out(id: PointId) -> pb::PointId {
    pb::PointId {
        point_id_options: Some(match id {
            PointId::Num(n) => PointIdOptions::Num(n),
            PointId::Uuid(u) => PointIdOptions::Uuid(u.hyphenated().to_string()),
        }),
    }
}

pub(crate) fn point_ids(ids: Vec<pb::PointId>) -> Result<Vec<PointId>, Status> {
    ids.into_iter().map(|i| point_id(Some(i))).collect()
}

/// A payload value from the wire. Integers stay integers, as over REST.
pub(crate) fn value(v: pb::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::DoubleValue(d)) => Number::from_f64(d).map_or(Value::Null, Value::Number),
        Some(Kind::IntegerValue(i)) => Value::Number(i.into()),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StructValue(s)) => Value::Object(payload(s.fields)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value).collect()),
    }
}

/// A payload value for the wire.
pub(crate) fn value_out(v: Value) -> pb::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Kind::IntegerValue(i),
            None => Kind::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(pb::ListValue {
            values: a.into_iter().map(value_out).collect(),
        }),
        Value::Object(m) => Kind::StructValue(pb::Struct {
            fields: payload_out(m),
        }),
    };
    pb::Value { kind: Some(kind) }
}

pub(crate) fn payload(fields: HashMap<String, pb::Value>) -> Payload {
    fields.into_iter().map(|(k, v)| (k, value(v))).collect()
}

pub(crate) fn payload_out(p: Map<String, Value>) -> HashMap<String, pb::Value> {
    p.into_iter().map(|(k, v)| (k, value_out(v))).collect()
}

/// One dense vector from the wire (the current `dense` form or the deprecated `data`).
pub(crate) fn dense(v: pb::Vector) -> Result<Vec<f32>, Status> {
    use pb::vector::Vector as V;
    match v.vector {
        Some(V::Dense(d)) => Ok(d.data),
        Some(V::Sparse(_)) => Err(invalid("sparse vectors are not supported by this service")),
        Some(V::MultiDense(_)) => Err(invalid("multivectors are not supported by this service")),
        Some(_) => Err(invalid(
            "inference inputs (documents, images, objects) are not supported by this service",
        )),
        None if v.indices.is_some() => {
            Err(invalid("sparse vectors are not supported by this service"))
        }
        None if v.vectors_count.is_some_and(|c| c > 1) => {
            Err(invalid("multivectors are not supported by this service"))
        }
        None => Ok(v.data),
    }
}

/// A point's vectors from the wire, as `(name, vector)` pairs (`""` for the unnamed one).
pub(crate) fn vectors(v: Option<pb::Vectors>) -> Result<Vec<(String, Vec<f32>)>, Status> {
    use pb::vectors::VectorsOptions as O;
    match v.and_then(|v| v.vectors_options) {
        None => Ok(Vec::new()),
        Some(O::Vector(v)) => Ok(vec![(String::new(), dense(v)?)]),
        Some(O::Vectors(named)) => {
            let mut out: Vec<_> = named
                .vectors
                .into_iter()
                .map(|(n, v)| Ok((n, dense(v)?)))
                .collect::<Result<_, Status>>()?;
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        }
    }
}

pub(crate) fn point(p: pb::PointStruct) -> Result<PointInput, Status> {
    Ok(PointInput {
        id: point_id(p.id)?,
        vectors: vectors(p.vectors)?,
        // Protobuf cannot tell an empty payload from none: both store as none, like a REST
        // upsert without `payload`, so that either transport reads the point back the same.
        payload: (!p.payload.is_empty()).then(|| payload(p.payload)),
    })
}

fn vector_out(v: Vec<f32>) -> pb::VectorOutput {
    pb::VectorOutput {
        vector: Some(pb::vector_output::Vector::Dense(pb::DenseVector {
            data: v,
        })),
        ..Default::default()
    }
}

/// A point's vectors for the wire, shaped as the collection declares them.
pub(crate) fn vectors_out(
    shape: VectorShape,
    v: Vec<(String, Vec<f32>)>,
    requested: bool,
) -> Option<pb::VectorsOutput> {
    use pb::vectors_output::VectorsOptions as O;
    if !requested {
        return None;
    }
    let options = match shape {
        VectorShape::Single => O::Vector(vector_out(v.into_iter().next()?.1)),
        VectorShape::Named => O::Vectors(pb::NamedVectorsOutput {
            vectors: v.into_iter().map(|(n, v)| (n, vector_out(v))).collect(),
        }),
    };
    Some(pb::VectorsOutput {
        vectors_options: Some(options),
    })
}

pub(crate) fn retrieved(
    shape: VectorShape,
    read: &ReadOptions,
    p: PointView,
) -> pb::RetrievedPoint {
    pb::RetrievedPoint {
        id: Some(point_id_out(p.id)),
        payload: payload_out(p.payload.unwrap_or_default()),
        vectors: vectors_out(shape, p.vectors, read.vectors != VectorSelect::None),
        ..Default::default()
    }
}

pub(crate) fn scored(
    shape: VectorShape,
    read: &ReadOptions,
    score: f32,
    p: PointView,
) -> pb::ScoredPoint {
    pb::ScoredPoint {
        id: Some(point_id_out(p.id)),
        payload: payload_out(p.payload.unwrap_or_default()),
        score,
        version: p.version,
        vectors: vectors_out(shape, p.vectors, read.vectors != VectorSelect::None),
        ..Default::default()
    }
}

/// What to return: unset selectors return no payload and no vectors, as Qdrant's gRPC API.
pub(crate) fn read_options(
    wp: Option<pb::WithPayloadSelector>,
    wv: Option<pb::WithVectorsSelector>,
) -> ReadOptions {
    use pb::with_payload_selector::SelectorOptions as P;
    use pb::with_vectors_selector::SelectorOptions as V;
    let payload = match wp.and_then(|w| w.selector_options) {
        None | Some(P::Enable(false)) => PayloadSelector::None,
        Some(P::Enable(true)) => PayloadSelector::All,
        Some(P::Include(i)) => PayloadSelector::Include(i.fields),
        Some(P::Exclude(e)) => PayloadSelector::Exclude(e.fields),
    };
    let vectors = match wv.and_then(|w| w.selector_options) {
        None | Some(V::Enable(false)) => VectorSelect::None,
        Some(V::Enable(true)) => VectorSelect::All,
        Some(V::Include(n)) => VectorSelect::Names(n.names),
    };
    ReadOptions { payload, vectors }
}

pub(crate) fn selector(s: Option<pb::PointsSelector>) -> Result<PointSelector, Status> {
    use pb::points_selector::PointsSelectorOneOf as S;
    match s.and_then(|s| s.points_selector_one_of) {
        Some(S::Points(list)) => Ok(PointSelector::Ids(point_ids(list.ids)?)),
        Some(S::Filter(f)) => Ok(PointSelector::Filter(Box::new(filter(f)?))),
        None => Err(invalid("a points selector (ids or filter) is required")),
    }
}

fn conditions(cs: Vec<pb::Condition>) -> Result<Option<OneOrMany<Condition>>, Status> {
    if cs.is_empty() {
        return Ok(None);
    }
    let list = cs
        .into_iter()
        .map(condition)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(OneOrMany::Many(list)))
}

/// A filter from the wire.
pub(crate) fn filter(f: pb::Filter) -> Result<Filter, Status> {
    if f.min_should.is_some() {
        return Err(invalid(
            "`min_should` filters are not supported by this service",
        ));
    }
    Ok(Filter {
        must: conditions(f.must)?,
        should: conditions(f.should)?,
        must_not: conditions(f.must_not)?,
    })
}

pub(crate) fn opt_filter(f: Option<pb::Filter>) -> Result<Option<Filter>, Status> {
    f.map(filter).transpose()
}

fn condition(c: pb::Condition) -> Result<Condition, Status> {
    match c.condition_one_of {
        Some(ConditionOneOf::Field(f)) => field_condition(f),
        Some(ConditionOneOf::IsEmpty(e)) => Ok(Condition::IsEmpty {
            is_empty: KeyRef { key: e.key },
        }),
        Some(ConditionOneOf::IsNull(e)) => Ok(Condition::IsNull {
            is_null: KeyRef { key: e.key },
        }),
        Some(ConditionOneOf::HasId(h)) => Ok(Condition::HasId {
            has_id: point_ids(h.has_id)?,
        }),
        Some(ConditionOneOf::Filter(f)) => Ok(Condition::Filter(Box::new(filter(f)?))),
        Some(ConditionOneOf::Nested(_)) => Err(invalid(
            "nested conditions are not supported by this service",
        )),
        Some(_) => Err(invalid(
            "this filter condition is not supported by this service",
        )),
        None => Err(invalid("a filter condition is empty")),
    }
}

fn field_condition(f: pb::FieldCondition) -> Result<Condition, Status> {
    if f.geo_bounding_box.is_some()
        || f.geo_radius.is_some()
        || f.geo_polygon.is_some()
        || f.values_count.is_some()
        || f.datetime_range.is_some()
    {
        return Err(invalid(format!(
            "condition on `{}`: geo, values-count and datetime conditions are not supported by this service",
            f.key
        )));
    }
    if f.is_empty == Some(true) {
        return Ok(Condition::IsEmpty {
            is_empty: KeyRef { key: f.key },
        });
    }
    if f.is_null == Some(true) {
        return Ok(Condition::IsNull {
            is_null: KeyRef { key: f.key },
        });
    }
    let r#match = f
        .r#match
        .and_then(|m| m.match_value)
        .map(match_value)
        .transpose()?;
    let range = f.range.map(|r| Range {
        gt: r.gt,
        gte: r.gte,
        lt: r.lt,
        lte: r.lte,
    });
    Ok(Condition::Field(FieldCondition {
        key: f.key,
        r#match,
        range,
    }))
}

/// A gRPC match as the filter's match; the kinds this service does not evaluate are refused.
fn match_value(m: MatchValue) -> Result<Match, Status> {
    match m {
        MatchValue::Keyword(s) => Ok(Match::Value {
            value: Value::String(s),
        }),
        MatchValue::Integer(i) => Ok(Match::Value {
            value: Value::from(i),
        }),
        MatchValue::Boolean(b) => Ok(Match::Value {
            value: Value::Bool(b),
        }),
        MatchValue::Text(t) | MatchValue::Substring(t) => Ok(Match::Text { text: t }),
        MatchValue::Keywords(k) => Ok(Match::Any {
            any: k.strings.into_iter().map(Value::String).collect(),
        }),
        MatchValue::Integers(k) => Ok(Match::Any {
            any: k.integers.into_iter().map(Value::from).collect(),
        }),
        MatchValue::ExceptKeywords(k) => Ok(Match::Except {
            except: k.strings.into_iter().map(Value::String).collect(),
        }),
        MatchValue::ExceptIntegers(k) => Ok(Match::Except {
            except: k.integers.into_iter().map(Value::from).collect(),
        }),
        _ => Err(invalid(
            "phrase, text-any and prefix matches are not supported by this service",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_values_round_trip() {
        let v = serde_json::json!({"a": 1, "b": 2.5, "c": "x", "d": [true, null], "e": {"f": -3}});
        let Value::Object(m) = v.clone() else {
            unreachable!()
        };
        assert_eq!(Value::Object(payload(payload_out(m))), v);
    }

    #[test]
    fn ids_round_trip_and_bad_uuids_are_invalid() {
        let u = PointId::Uuid(uuid::Uuid::new_v4());
        assert_eq!(point_id(Some(point_id_out(u))).unwrap(), u);
        let bad = pb::PointId {
            point_id_options: Some(PointIdOptions::Uuid("nope".into())),
        };
        assert_eq!(
            point_id(Some(bad)).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
