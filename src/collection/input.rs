//! The shapes in which points arrive to be written: Qdrant's upsert body, with its `points`
//! list or its column-wise `batch`, as the REST API takes it and as Qdrant's WAL records it.

use serde::Deserialize;

use super::types::{BatchVectors, Payload, PointId, VectorInput, DEFAULT_VECTOR};
use super::PointInput;
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct PointIn {
    id: PointId,
    #[serde(default)]
    vector: Option<VectorInput>,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Deserialize)]
struct BatchIn {
    ids: Vec<PointId>,
    vectors: BatchVectors,
    #[serde(default)]
    payloads: Option<Vec<Option<Payload>>>,
}

/// An upsert body: the `points` or the `batch` form.
#[derive(Deserialize)]
pub(crate) struct UpsertInput {
    #[serde(default)]
    points: Option<Vec<PointIn>>,
    #[serde(default)]
    batch: Option<BatchIn>,
}

impl UpsertInput {
    /// The points to write.
    ///
    /// # Errors
    /// `BadInput` when the body has both forms or neither, or a batch's columns differ in
    /// length.
    pub(crate) fn into_points(self) -> Result<Vec<PointInput>> {
        match (self.points, self.batch) {
            (Some(points), None) => Ok(points
                .into_iter()
                .map(|p| PointInput {
                    id: p.id,
                    vectors: p.vector.map(VectorInput::into_named).unwrap_or_default(),
                    payload: p.payload,
                })
                .collect()),
            (None, Some(b)) => PointBatch {
                ids: b.ids,
                vectors: b.vectors,
                payloads: b.payloads,
            }
            .into_points(),
            _ => Err(Error::bad_input(
                "the body must have exactly one of `points` or `batch`",
            )),
        }
    }
}

/// Qdrant's column-wise `batch` form of an upsert.
#[derive(Clone, Debug)]
pub(crate) struct PointBatch {
    /// One id per point.
    pub ids: Vec<PointId>,
    /// One vector per point, plain or per name.
    pub vectors: BatchVectors,
    /// One optional payload per point, when given.
    pub payloads: Option<Vec<Option<Payload>>>,
}

impl PointBatch {
    /// Turns the columns into points.
    ///
    /// # Errors
    /// `BadInput` when a column's length differs from the number of ids.
    pub(crate) fn into_points(self) -> Result<Vec<PointInput>> {
        let n = self.ids.len();
        let mismatch = |what: String, len: usize| {
            Error::bad_input(format!("batch has {n} ids but {len} {what}"))
        };
        if let Some(p) = &self.payloads {
            if p.len() != n {
                return Err(mismatch("payloads".into(), p.len()));
            }
        }
        let vectors: Vec<Vec<(String, Vec<f32>)>> = match self.vectors {
            BatchVectors::Plain(v) => {
                if v.len() != n {
                    return Err(mismatch("vectors".into(), v.len()));
                }
                v.into_iter()
                    .map(|x| vec![(DEFAULT_VECTOR.to_string(), x)])
                    .collect()
            }
            BatchVectors::Named(map) => {
                let mut per_point = vec![Vec::new(); n];
                for (name, list) in map {
                    if list.len() != n {
                        return Err(mismatch(format!("vectors named `{name}`"), list.len()));
                    }
                    for (slot, v) in per_point.iter_mut().zip(list) {
                        slot.push((name.clone(), v));
                    }
                }
                per_point
            }
        };
        let mut payloads = self.payloads.unwrap_or_default().into_iter();
        Ok(self
            .ids
            .into_iter()
            .zip(vectors)
            .map(|(id, vectors)| PointInput {
                id,
                vectors,
                payload: payloads.next().flatten(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_become_points_and_lengths_are_checked() {
        let batch = PointBatch {
            ids: vec![PointId::Num(1), PointId::Num(2)],
            vectors: BatchVectors::Plain(vec![vec![1.0], vec![2.0]]),
            payloads: Some(vec![None, Some(Payload::new())]),
        };
        let points = batch.into_points().unwrap();
        assert_eq!(points[1].vectors, vec![(String::new(), vec![2.0])]);
        assert_eq!(points[1].payload, Some(Payload::new()));
        let short = PointBatch {
            ids: vec![PointId::Num(1), PointId::Num(2)],
            vectors: BatchVectors::Plain(vec![vec![1.0]]),
            payloads: None,
        };
        assert!(matches!(short.into_points(), Err(Error::BadInput(_))));
    }
}
