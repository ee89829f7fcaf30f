//! Applies operations read from a Qdrant WAL (see `wal.rs`) to a collection being recovered,
//! as Qdrant applies them on start-up: upserts (plain, batch and conditional), deletes by id
//! and by filter, payload changes, vector updates and deletions, and payload index changes.
//! An operation snapstream cannot reproduce is refused by name, so that a recovery never
//! silently differs from what Qdrant served.

use serde::Deserialize;
use serde_json::Value;

use super::segment::NamedVectors;
use crate::collection::filter::Filter;
use crate::collection::types::{Payload, PointId, VectorInput};
use crate::collection::{
    Collection, PayloadChange, PointInput, PointSelector, PointsChange, UpsertInput,
};
use crate::error::{Error, Result};

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_input(format!("invalid Qdrant snapshot: {}", msg.into()))
}

/// The operation's name and body: the one key of its map besides `clock_tag`.
fn split(op: &Value) -> Option<(&str, &Value)> {
    op.as_object()?
        .iter()
        .find(|(k, _)| k.as_str() != "clock_tag")
        .map(|(k, v)| (k.as_str(), v))
}

fn parse<T: for<'de> Deserialize<'de>>(v: &Value, num: u64, what: &str) -> Result<T> {
    T::deserialize(v).map_err(|e| bad(format!("WAL operation {num}: {what}: {e}")))
}

/// The points of an `upsert_points` body: `{"points": [...]}` or `{"batch": {...}}`.
fn points_of(body: &Value, num: u64) -> Result<Vec<PointInput>> {
    let input: UpsertInput = parse(body, num, "upsert")?;
    input
        .into_points()
        .map_err(|e| bad(format!("WAL operation {num}: {}", e.public_message())))
}

/// Points selected by a payload operation: its `points`, else its `filter`.
fn selector(body: &Value, num: u64) -> Result<PointSelector> {
    if let Some(ids) = body.get("points").filter(|v| !v.is_null()) {
        return Ok(PointSelector::Ids(parse(ids, num, "points")?));
    }
    if let Some(filter) = body.get("filter").filter(|v| !v.is_null()) {
        return Ok(PointSelector::Filter(Box::new(parse(
            filter, num, "filter",
        )?)));
    }
    Err(bad(format!("WAL operation {num}: no points or filter")))
}

fn write(col: &Collection, points: Vec<PointInput>, num: u64) -> Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let writes = col
        .prepare(points)
        .map_err(|e| bad(format!("WAL operation {num}: {}", e.public_message())))?;
    col.change_blocking(PointsChange::Upsert(writes))
        .map(|_| ())
}

/// Rewrites the selected existing points with `edit` applied to their vectors.
fn edit_vectors(
    col: &Collection,
    ids: Vec<PointId>,
    num: u64,
    edit: impl Fn(&PointId, &mut NamedVectors),
) -> Result<()> {
    let points = col.read(|store| {
        ids.iter()
            .filter_map(|id| store.get(id))
            .map(|p| {
                let mut vectors = p.vectors;
                edit(&p.id, &mut vectors);
                PointInput {
                    id: p.id,
                    vectors,
                    payload: p.payload,
                }
            })
            .collect::<Vec<_>>()
    });
    write(col, points, num)
}

fn matching(col: &Collection, filter: &Filter) -> Vec<PointId> {
    col.read(|store| store.matching_ids(filter))
}

/// Applies WAL operation `num` to `col`.
pub fn apply(col: &Collection, num: u64, op: &Value) -> Result<()> {
    let Some((kind, body)) = split(op) else {
        return Err(bad(format!("WAL operation {num} is not an operation")));
    };
    match kind {
        "upsert_points" => write(col, points_of(body, num)?, num),
        "upsert_points_conditional" => upsert_conditional(col, body, num),
        "delete_points" => {
            let ids = parse(&body["ids"], num, "ids")?;
            col.change_blocking(PointsChange::Delete(PointSelector::Ids(ids)))
                .map(|_| ())
        }
        "delete_points_by_filter" => {
            let filter = parse(body, num, "filter")?;
            col.change_blocking(PointsChange::Delete(PointSelector::Filter(Box::new(
                filter,
            ))))
            .map(|_| ())
        }
        "set_payload"
        | "overwrite_payload"
        | "delete_payload"
        | "clear_payload"
        | "clear_payload_by_filter" => {
            let (select, change) = payload_change(kind, body, num)?;
            col.change_blocking(PointsChange::Payload(select, change))
                .map(|_| ())
        }
        "update_vectors" => update_vectors(col, body, num),
        "delete_vectors" | "delete_vectors_by_filter" => delete_vectors(col, kind, body, num),
        "create_index" => {
            let field = body["field_name"]
                .as_str()
                .ok_or_else(|| bad(format!("WAL operation {num}: an index without a field")))?
                .to_string();
            let schema = match &body["field_schema"] {
                Value::Null => Value::String("keyword".into()),
                s => s.clone(),
            };
            col.update_config(|c| {
                c.payload_schema.insert(field, schema);
            })
        }
        "delete_index" => {
            let field = body.as_str().unwrap_or_default().to_string();
            col.update_config(|c| {
                c.payload_schema.remove(&field);
            })
        }
        other => Err(bad(format!(
            "the WAL holds operation {num} (`{other}`), which the segments do not hold yet \
             and snapstream cannot replay"
        ))),
    }
}

/// An upsert that writes only the points its mode and condition allow.
fn upsert_conditional(col: &Collection, body: &Value, num: u64) -> Result<()> {
    let points = points_of(&body["points_op"], num)?;
    let condition: Option<Filter> = match &body["condition"] {
        Value::Null => None,
        c => Some(parse(c, num, "condition")?),
    };
    let mode = body["update_mode"].as_str().unwrap_or("upsert");
    let keep = col.read(|store| {
        points
            .into_iter()
            .filter(|p| match store.get(&p.id) {
                None => mode != "update_only",
                Some(old) => {
                    mode != "insert_only"
                        && condition
                            .as_ref()
                            .is_none_or(|c| c.matches(old.id, old.payload.as_ref()))
                }
            })
            .collect::<Vec<_>>()
    });
    write(col, keep, num)
}

/// The points and the payload change of a payload operation of `kind`.
fn payload_change(kind: &str, body: &Value, num: u64) -> Result<(PointSelector, PayloadChange)> {
    Ok(match kind {
        "clear_payload_by_filter" => (
            PointSelector::Filter(Box::new(parse(body, num, "filter")?)),
            PayloadChange::Clear,
        ),
        "clear_payload" => (selector(body, num)?, PayloadChange::Clear),
        "delete_payload" => (
            selector(body, num)?,
            PayloadChange::DeleteKeys(parse(&body["keys"], num, "keys")?),
        ),
        _ => {
            if body["key"].as_str().is_some_and(|k| !k.is_empty()) {
                return Err(bad(format!(
                    "WAL operation {num} sets a payload under a nested key, which \
                     snapstream does not support"
                )));
            }
            let payload: Payload = parse(&body["payload"], num, "payload")?;
            let change = if kind == "set_payload" {
                PayloadChange::Merge(payload)
            } else {
                PayloadChange::Overwrite(payload)
            };
            (selector(body, num)?, change)
        }
    })
}

/// Replaces the named vectors of the listed points (those the filter allows, if any).
fn update_vectors(col: &Collection, body: &Value, num: u64) -> Result<()> {
    #[derive(Deserialize)]
    struct One {
        id: PointId,
        vector: VectorInput,
    }
    let list: Vec<One> = parse(&body["points"], num, "points")?;
    let allowed = match &body["update_filter"] {
        Value::Null => None,
        f => Some(matching(col, &parse(f, num, "update_filter")?)),
    };
    let updates: Vec<(PointId, NamedVectors)> = list
        .into_iter()
        .filter(|o| allowed.as_ref().is_none_or(|a| a.contains(&o.id)))
        .map(|o| (o.id, o.vector.into_named()))
        .collect();
    let ids = updates.iter().map(|(id, _)| *id).collect();
    edit_vectors(col, ids, num, |id, vectors| {
        for (_, new) in updates.iter().filter(|(u, _)| u == id) {
            for (name, v) in new {
                vectors.retain(|(n, _)| n != name);
                vectors.push((name.clone(), v.clone()));
            }
        }
    })
}

/// Removes named vectors from points chosen by id or by filter.
fn delete_vectors(col: &Collection, kind: &str, body: &Value, num: u64) -> Result<()> {
    // Both are two-element lists: what to select, then the vector names.
    let ids: Vec<PointId> = if kind == "delete_vectors" {
        parse(&body[0]["points"], num, "points")?
    } else {
        matching(col, &parse(&body[0], num, "filter")?)
    };
    let names: Vec<String> = parse(&body[1], num, "vector names")?;
    edit_vectors(col, ids, num, |_, vectors| {
        vectors.retain(|(n, _)| !names.contains(n));
    })
}
