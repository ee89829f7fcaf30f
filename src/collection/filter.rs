//! Qdrant's payload filter: `must` / `should` / `must_not` over field conditions.

use serde::Deserialize;
use serde_json::Value;

use super::types::{Payload, PointId};

/// One condition or a list of them (Qdrant accepts both forms).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A list. Tried first: a derived struct would also accept an array positionally.
    Many(Vec<T>),
    /// A single condition.
    One(T),
}

impl<T> OneOrMany<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

/// A boolean combination of conditions.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Filter {
    /// All must hold.
    #[serde(default)]
    pub must: Option<OneOrMany<Condition>>,
    /// At least one must hold (when any are given).
    #[serde(default)]
    pub should: Option<OneOrMany<Condition>>,
    /// None may hold.
    #[serde(default)]
    pub must_not: Option<OneOrMany<Condition>>,
}

/// A single condition.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    /// A condition on a payload field.
    Field(FieldCondition),
    /// The point id is one of these.
    HasId {
        /// The ids.
        has_id: Vec<PointId>,
    },
    /// The field is missing, null or an empty list.
    IsEmpty {
        /// `{"key": ...}`
        is_empty: KeyRef,
    },
    /// The field is null.
    IsNull {
        /// `{"key": ...}`
        is_null: KeyRef,
    },
    /// A nested filter.
    Filter(Box<Filter>),
}

/// A reference to a payload key.
#[derive(Clone, Debug, Deserialize)]
pub struct KeyRef {
    /// Dotted path into the payload.
    pub key: String,
}

/// A condition on the values found at `key`.
#[derive(Clone, Debug, Deserialize)]
pub struct FieldCondition {
    /// Dotted path into the payload; arrays match if any element matches.
    pub key: String,
    /// Value match.
    #[serde(rename = "match", default)]
    pub r#match: Option<Match>,
    /// Numeric range.
    #[serde(default)]
    pub range: Option<Range>,
}

/// Match forms: exact value, any of a list, none of a list, or substring text.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Match {
    /// Exact keyword, integer or bool.
    Value {
        /// The value.
        value: Value,
    },
    /// Equal to any of these.
    Any {
        /// The values.
        any: Vec<Value>,
    },
    /// Equal to none of these.
    Except {
        /// The values.
        except: Vec<Value>,
    },
    /// Contains this text.
    Text {
        /// The text.
        text: String,
    },
}

/// A numeric range; every bound is optional.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Range {
    /// Greater than.
    pub gt: Option<f64>,
    /// Greater than or equal.
    pub gte: Option<f64>,
    /// Less than.
    pub lt: Option<f64>,
    /// Less than or equal.
    pub lte: Option<f64>,
}

/// The values at a dotted `key`, flattening arrays (`a[]` is the same as `a`).
fn values_at<'a>(payload: &'a Payload, key: &str) -> Vec<&'a Value> {
    let mut current: Vec<&Value> = Vec::new();
    let mut parts = key.split('.').map(|p| p.trim_end_matches("[]"));
    let Some(first) = parts.next() else {
        return current;
    };
    if let Some(v) = payload.get(first) {
        current.push(v);
    }
    for part in parts {
        let mut next = Vec::new();
        for v in current {
            match v {
                Value::Object(m) => next.extend(m.get(part)),
                Value::Array(items) => {
                    next.extend(items.iter().filter_map(|i| i.as_object()?.get(part)))
                }
                _ => {}
            }
        }
        current = next;
    }
    let mut flat = Vec::new();
    for v in current {
        match v {
            Value::Array(items) => flat.extend(items.iter()),
            other => flat.push(other),
        }
    }
    flat
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

impl Range {
    fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

impl FieldCondition {
    fn matches(&self, payload: &Payload) -> bool {
        let values = values_at(payload, &self.key);
        if let Some(m) = &self.r#match {
            let ok = match m {
                Match::Value { value } => values.iter().any(|v| same_value(v, value)),
                Match::Any { any } => values.iter().any(|v| any.iter().any(|a| same_value(v, a))),
                Match::Except { except } => {
                    !values.is_empty()
                        && values
                            .iter()
                            .all(|v| !except.iter().any(|a| same_value(v, a)))
                }
                Match::Text { text } => values
                    .iter()
                    .any(|v| v.as_str().is_some_and(|s| s.contains(text.as_str()))),
            };
            if !ok {
                return false;
            }
        }
        if let Some(r) = &self.range {
            if !values
                .iter()
                .any(|v| v.as_f64().is_some_and(|x| r.contains(x)))
            {
                return false;
            }
        }
        self.r#match.is_some() || self.range.is_some()
    }
}

impl Condition {
    fn matches(&self, id: PointId, payload: Option<&Payload>) -> bool {
        let empty = Payload::new();
        let payload = payload.unwrap_or(&empty);
        match self {
            Condition::Field(f) => f.matches(payload),
            Condition::HasId { has_id } => has_id.contains(&id),
            Condition::IsEmpty { is_empty } => values_at(payload, &is_empty.key)
                .iter()
                .all(|v| v.is_null()),
            Condition::IsNull { is_null } => {
                let vals = values_at(payload, &is_null.key);
                !vals.is_empty() && vals.iter().all(|v| v.is_null())
            }
            Condition::Filter(f) => f.matches(id, Some(payload)),
        }
    }
}

impl Filter {
    /// Whether the point passes the filter.
    pub fn matches(&self, id: PointId, payload: Option<&Payload>) -> bool {
        if let Some(must) = &self.must {
            if !must.as_slice().iter().all(|c| c.matches(id, payload)) {
                return false;
            }
        }
        if let Some(should) = &self.should {
            let s = should.as_slice();
            if !s.is_empty() && !s.iter().any(|c| c.matches(id, payload)) {
                return false;
            }
        }
        if let Some(not) = &self.must_not {
            if not.as_slice().iter().any(|c| c.matches(id, payload)) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Payload {
        v.as_object().cloned().unwrap()
    }

    fn f(v: Value) -> Filter {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn must_should_must_not_on_keyword_int_bool() {
        let pay =
            p(json!({"city": "Berlin", "n": 3, "ok": true, "tags": ["a", "b"], "geo": {"c": "x"}}));
        let id = PointId::Num(1);
        assert!(
            f(json!({"must": [{"key": "city", "match": {"value": "Berlin"}}]}))
                .matches(id, Some(&pay))
        );
        assert!(!f(json!({"must": {"key": "n", "match": {"value": 4}}})).matches(id, Some(&pay)));
        assert!(f(json!({"should": [{"key": "n", "match": {"value": 4}}, {"key": "ok", "match": {"value": true}}]})).matches(id, Some(&pay)));
        assert!(
            !f(json!({"must_not": [{"key": "tags", "match": {"value": "b"}}]}))
                .matches(id, Some(&pay))
        );
        assert!(
            f(json!({"must": [{"key": "geo.c", "match": {"any": ["x", "y"]}}]}))
                .matches(id, Some(&pay))
        );
        assert!(
            f(json!({"must": [{"key": "n", "range": {"gte": 3, "lt": 4}}]}))
                .matches(id, Some(&pay))
        );
        assert!(f(json!({"must": [{"has_id": [1, 2]}]})).matches(id, Some(&pay)));
        assert!(f(json!({"must": [{"is_empty": {"key": "missing"}}]})).matches(id, Some(&pay)));
        assert!(!f(json!({"must": [{"key": "missing", "match": {"value": 1}}]})).matches(id, None));
    }
}
